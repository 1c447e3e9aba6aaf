#!/bin/sh
# The official nginx image's template step, for the stand-in gateway: every
# $NGINX_ENVSUBST_TEMPLATE_DIR/*.template becomes $NGINX_ENVSUBST_OUTPUT_DIR/<name without
# .template>, with only the variables whose names match the NGINX_ENVSUBST_FILTER regular
# expression substituted (docker-compose.yml: GATEWAY_); then the command runs.
set -eu
template_dir=${NGINX_ENVSUBST_TEMPLATE_DIR:-/etc/nginx/templates}
output_dir=${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}
suffix=${NGINX_ENVSUBST_TEMPLATE_SUFFIX:-.template}
# '${NAME} ' for each variable set in the environment whose name matches the filter.
names=$(awk 'BEGIN { for (name in ENVIRON) if (name ~ ENVIRON["NGINX_ENVSUBST_FILTER"]) printf "${%s} ", name }')
for template in "$template_dir"/*"$suffix"; do
    [ -f "$template" ] || continue
    output="$output_dir/$(basename "$template" "$suffix")"
    envsubst "$names" < "$template" > "$output"
    echo "render-templates: $template -> $output" >&2
done
exec "$@"
