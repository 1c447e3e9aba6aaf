// The page: upload a file to /predict, or stream the microphone over /ws/stream.
"use strict";

const LABELS = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"];
const $ = (id) => document.getElementById(id);

// ---------- probability bars ----------

function makeBars(container) {
  container.replaceChildren();
  for (const label of LABELS) {
    const row = document.createElement("div");
    row.className = "bar-row";
    row.dataset.label = label;
    row.innerHTML =
      `<span class="bar-name">${label}</span>` +
      `<div class="bar-track" role="meter" aria-valuemin="0" aria-valuemax="100"` +
      ` aria-valuenow="0" aria-label="${label}"><div class="bar-fill"></div></div>` +
      `<span class="bar-value">0%</span>`;
    container.append(row);
  }
}

// Accepts {label: p} or [p, ...] in LABELS order.
function asList(probabilities) {
  if (Array.isArray(probabilities)) return probabilities;
  return LABELS.map((label) => Number(probabilities[label] ?? 0));
}

function showBars(container, probabilities) {
  if (!container.firstChild) makeBars(container);
  const values = asList(probabilities);
  const top = values.indexOf(Math.max(...values));
  container.querySelectorAll(".bar-row").forEach((row, i) => {
    const percent = Math.round(values[i] * 1000) / 10;
    row.querySelector(".bar-fill").style.width = `${percent}%`;
    row.querySelector(".bar-track").setAttribute("aria-valuenow", String(percent));
    row.querySelector(".bar-value").textContent = `${percent.toFixed(1)}%`;
    row.classList.toggle("top", i === top);
  });
}

// A top label this close to the next (in probability) is shown as a close call, not a verdict.
const CLOSE_CALL = 0.05;

// The second label and its probability when it is within `margin` of the first, else null.
function runnerUpWithin(probabilities, margin) {
  const ranked = asList(probabilities)
    .map((p, i) => ({ label: LABELS[i], p }))
    .sort((a, b) => b.p - a.p);
  return ranked.length > 1 && ranked[0].p - ranked[1].p < margin ? ranked[1] : null;
}

// ---------- arousal and valence ----------

// Each -1..+1: the eight probabilities on Russell's circumplex (docs/api.md). A meter fills
// from its centre (0) towards the value.
const AFFECT = [
  { key: "arousal", low: "sleepy", high: "aroused" },
  { key: "valence", low: "unpleasant", high: "pleasant" },
];

function makeAffect(container) {
  container.replaceChildren();
  for (const { key, low, high } of AFFECT) {
    const row = document.createElement("div");
    row.className = "affect-row";
    row.dataset.dimension = key;
    row.innerHTML =
      `<span class="affect-name">${key}</span>` +
      `<span class="affect-end low">${low}</span>` +
      `<div class="affect-track" role="meter" aria-valuemin="-1" aria-valuemax="1"` +
      ` aria-valuenow="0" aria-valuetext="none" aria-label="${key}"><div class="affect-fill"></div></div>` +
      `<span class="affect-end high">${high}</span>` +
      `<span class="affect-value" data-value="">&ndash;</span>`;
    container.append(row);
  }
}

function signed(value) {
  return `${value >= 0 ? "+" : ""}${value.toFixed(2)}`;
}

// arousal, valence: numbers, or null when there is nothing to score (no speech yet).
function showAffect(container, arousal, valence) {
  if (!container.firstChild) makeAffect(container);
  const values = { arousal, valence };
  container.querySelectorAll(".affect-row").forEach((row, i) => {
    const value = values[row.dataset.dimension];
    const known = typeof value === "number";
    const v = known ? Math.max(-1, Math.min(1, value)) : 0;
    const fill = row.querySelector(".affect-fill");
    fill.style.left = `${50 + Math.min(0, v) * 50}%`;
    fill.style.width = `${Math.abs(v) * 50}%`;
    const track = row.querySelector(".affect-track");
    track.setAttribute("aria-valuenow", String(v));
    const side = v < 0 ? AFFECT[i].low : AFFECT[i].high;
    track.setAttribute("aria-valuetext", known ? `${signed(value)}, ${side}` : "none");
    const text = row.querySelector(".affect-value");
    text.textContent = known ? signed(value) : "\u2013";
    text.dataset.value = known ? String(value) : "";
  });
}

function setStatus(element, text, isError = false) {
  element.textContent = text;
  element.classList.toggle("error", isError);
}

function selectedModel() {
  return $("model").value || null;
}

// ---------- models ----------

// What /v1/models says of each model, by menu value ("" is the default model).
const modelFacts = new Map();

// One line of facts from the model's metadata: its loss, how it scored on the test split (or,
// for a model without test metrics, its validation score) and its calibration temperature.
function describeModel(model) {
  const parts = [`${model.name}: ${model.loss} loss`];
  const test = model.metrics?.test;
  if (typeof test?.accuracy === "number") {
    const f1 = typeof test.macro_f1 === "number" ? `, macro-F1 ${test.macro_f1.toFixed(3)}` : "";
    parts.push(`test accuracy ${(test.accuracy * 100).toFixed(1)}%${f1}`);
  } else if (typeof model.validation_score === "number") {
    parts.push(`validation score ${model.validation_score.toFixed(3)}`);
  }
  if (typeof model.temperature === "number") {
    parts.push(
      model.temperature === 1
        ? "not calibrated (temperature 1)"
        : `calibrated, temperature ${model.temperature.toFixed(2)}`,
    );
  }
  return parts.join("; ");
}

function showModelInfo() {
  const model = modelFacts.get($("model").value);
  $("model-info").textContent = model ? describeModel(model) : "";
}

async function loadModels() {
  try {
    const response = await fetch("/v1/models");
    if (!response.ok) return;
    const body = await response.json();
    for (const model of body.models || []) {
      const option = document.createElement("option");
      option.value = model.key;
      option.textContent = `${model.key} loss` + (model.provider ? ` on ${model.provider}` : "");
      $("model").append(option);
      modelFacts.set(model.key, model);
      if (model.default) modelFacts.set("", model);
    }
    if (body.default) {
      $("model").options[0].textContent = `default (${body.default})`;
    }
    showModelInfo();
  } catch {
    // The list is a convenience: the default model still works without it.
  }
}

// ---------- upload ----------

async function upload(event) {
  event.preventDefault();
  const file = $("file").files[0];
  const status = $("upload-status");
  if (!file) {
    setStatus(status, "Choose an audio file first.", true);
    return;
  }
  const form = new FormData();
  form.append("file", file);
  const query = new URLSearchParams();
  const model = selectedModel();
  if (model) query.set("model", model);
  if ($("upload-utterances").checked) query.set("segments", "utterances");
  const url = query.size ? `/predict?${query}` : "/predict";
  $("upload-button").disabled = true;
  setStatus(status, `Analysing ${file.name}...`);
  try {
    const response = await fetch(url, { method: "POST", body: form });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      // The previous file's result would read as this one's: it goes.
      $("upload-result").hidden = true;
      const message = body.error?.message || body.detail || response.statusText;
      setStatus(status, `Could not analyse ${file.name}: ${message}`, true);
      return;
    }
    $("upload-result").hidden = false;
    $("upload-label").textContent = body.label;
    const confidence = body.confidence ?? Math.max(...asList(body.probabilities));
    const duration = body.duration_s !== undefined ? `, ${Number(body.duration_s).toFixed(1)} s` : "";
    const rival = runnerUpWithin(body.probabilities, CLOSE_CALL);
    $("upload-label").classList.toggle("uncertain", rival !== null);
    $("upload-detail").textContent =
      `${(confidence * 100).toFixed(1)}% confidence${duration}` +
      (rival ? `; a close call: ${rival.label} ${(rival.p * 100).toFixed(1)}% is just behind` : "");
    showBars($("upload-bars"), body.probabilities);
    showAffect($("upload-affect"), body.arousal ?? null, body.valence ?? null);
    // Emotion, arousal and valence over time, for a recording of more than one window; or the
    // utterances as bands. Windows without speech carry no probabilities: shaded as silence.
    const segments = body.segments || [];
    const byUtterance = body.segmentation === "utterances";
    timelines.upload.clear(Number(body.duration_s) || 0);
    timelines.uploadAffect.clear(Number(body.duration_s) || 0);
    if (!byUtterance) {
      for (const s of segments) {
        timelines.upload.add(s.start_s, s.end_s, s.speech === false ? null : s.probabilities);
        timelines.uploadAffect.add(s.start_s, s.end_s, s.speech === false ? null : s);
      }
    }
    showUtterances(byUtterance ? segments : [], body.duration_s);
    const timeline = !byUtterance && segments.length >= 2;
    $("upload-timeline").hidden = !timeline;
    $("upload-affect-timeline").hidden = !timeline;
    $("upload-view").hidden = !timeline;
    const heard = body.speech_s !== undefined ? ` (${body.speech_s.toFixed(1)} s of speech)` : "";
    setStatus(status, `${file.name}: ${body.label}${heard}.`);
  } catch (error) {
    setStatus(status, `Upload failed: ${error.message}`, true);
  } finally {
    $("upload-button").disabled = false;
  }
}

// One band per utterance on the recording's time axis, coloured and named by its label.
function showUtterances(utterances, durationS) {
  const bands = $("utterance-bands");
  bands.replaceChildren();
  bands.hidden = utterances.length === 0;
  for (const u of utterances) {
    const band = document.createElement("div");
    band.className = "band";
    band.setAttribute("role", "listitem");
    band.dataset.label = u.label;
    band.style.left = `${(100 * u.start_s) / durationS}%`;
    band.style.width = `${(100 * (u.end_s - u.start_s)) / durationS}%`;
    band.style.background = TIMELINE_COLOURS[u.label] || "#555";
    const text = `${u.label} ${(u.confidence * 100).toFixed(0)}%, ${u.start_s.toFixed(1)}-${u.end_s.toFixed(1)} s`;
    band.title = text;
    band.setAttribute("aria-label", text);
    band.textContent = u.label;
    bands.append(band);
  }
}

// An upload's timelines show the smoothed view unless "raw windows" is ticked (timeline.js).
function showUploadView() {
  const smoothed = !$("upload-raw").checked;
  timelines.upload.setSmoothed(smoothed);
  timelines.uploadAffect.setSmoothed(smoothed);
}

// ---------- microphone streaming ----------

let live = null; // {socket, context, media, node, source, ready, level}
const timelines = {}; // upload, uploadAffect, live, liveAffect: Timeline (timeline.js)

function floatToPcm16(block) {
  const pcm = new Int16Array(block.length);
  for (let i = 0; i < block.length; i++) {
    const s = Math.max(-1, Math.min(1, block[i]));
    pcm[i] = s < 0 ? s * 0x8000 : s * 0x7fff;
  }
  return pcm.buffer;
}

async function startStreaming() {
  const status = $("live-status");
  $("start-button").disabled = true;
  $("summary").hidden = true;
  try {
    const media = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    const context = new AudioContext(); // the device's native rate; the server resamples
    await context.audioWorklet.addModule("/static/pcm-worklet.js");
    const source = context.createMediaStreamSource(media);
    const node = new AudioWorkletNode(context, "pcm-capture", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      channelCount: 1,
      channelCountMode: "explicit",
    });
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/ws/stream`);
    socket.binaryType = "arraybuffer";
    const level = new InputLevel(context.sampleRate); // level.js
    live = { socket, context, media, node, source, ready: false, level, speaking: false };
    socket.onopen = () => {
      const start = { type: "start", sample_rate: context.sampleRate, encoding: "pcm_s16le", channels: 1 };
      const model = selectedModel();
      if (model) start.model = model;
      socket.send(JSON.stringify(start));
      setStatus(status, `Connecting at ${context.sampleRate} Hz...`);
    };
    socket.onmessage = (event) => onServerMessage(JSON.parse(event.data));
    socket.onclose = (event) => onClosed(event);
    socket.onerror = () => setStatus(status, "The connection to the server failed.", true);
    node.port.onmessage = (event) => {
      if (!live) return;
      live.level.push(event.data);
      showLevel(live.level, live.speaking);
      if (live.ready && socket.readyState === WebSocket.OPEN) {
        socket.send(floatToPcm16(event.data));
      }
    };
    source.connect(node);
    node.connect(context.destination); // keeps the graph pulled; the node outputs silence
  } catch (error) {
    setStatus(status, `Cannot use the microphone: ${error.message}`, true);
    releaseAudio();
    $("start-button").disabled = false;
  }
}

function onServerMessage(message) {
  const status = $("live-status");
  if (message.type === "ready") {
    live.ready = true;
    $("stop-button").disabled = false;
    $("live-result").hidden = false;
    makeBars($("live-bars"));
    makeAffect($("live-affect"));
    timelines.live.clear();
    timelines.liveAffect.clear();
    setStatus(
      status,
      `Streaming to ${message.model} at ${message.sample_rate} Hz; first prediction after ` +
        `${message.window_s} s.`,
    );
  } else if (message.type === "prediction") {
    showPrediction(message);
  } else if (message.type === "summary") {
    showSummary(message);
  } else if (message.type === "error") {
    setStatus(status, `Server error (${message.code}): ${message.message}`, true);
  }
}

function showPrediction(message) {
  if (live) live.speaking = message.speech;
  timelines.live.add(message.start_s, message.end_s, message.speech ? message.probabilities : null);
  timelines.liveAffect.add(message.start_s, message.end_s, message.speech ? message : null);
  const indicator = $("speech-indicator");
  indicator.dataset.speech = String(message.speech);
  indicator.classList.toggle("speech", message.speech);
  indicator.classList.toggle("silence", !message.speech);
  $("speech-text").textContent = message.speech ? "speech" : "silence";
  if (message.smoothed) {
    // Only on change: the label is a live region, and re-setting it could be re-announced.
    if ($("live-label").textContent !== message.smoothed_label) {
      $("live-label").textContent = message.smoothed_label;
    }
    showBars($("live-bars"), message.smoothed);
    showAffect($("live-affect"), message.smoothed_arousal ?? null, message.smoothed_valence ?? null);
  }
  $("live-detail").textContent =
    `${message.start_s.toFixed(1)}-${message.end_s.toFixed(1)} s` +
    (message.speech ? `, now ${message.label}` : "") +
    `, ${message.latency_ms.toFixed(0)} ms`;
  $("live-result").dataset.predictions = String(Number($("live-result").dataset.predictions || 0) + 1);
}

function showSummary(message) {
  $("summary").hidden = false;
  const speech = `${message.speech_windows} of ${message.windows} windows with speech`;
  $("summary-text").textContent = message.label
    ? `${message.duration_s.toFixed(1)} s streamed, ${speech}: overall ${message.label}.`
    : `${message.duration_s.toFixed(1)} s streamed, ${speech}: no speech to classify.`;
  if (message.probabilities) {
    showBars($("summary-bars"), message.probabilities);
    showAffect($("summary-affect"), message.arousal ?? null, message.valence ?? null);
  } else {
    $("summary-bars").replaceChildren();
    $("summary-affect").replaceChildren();
  }
}

// ---------- input level ----------

const LEVEL_HINTS = {
  ok: "ok",
  quiet: `speech too quiet (below ${QUIET_DBFS} dBFS): move closer or raise the input volume`,
  clipping: "clipping: move back or lower the input volume",
};

// The meter's number and bar every block; the hint (a live region) only when it changes.
function showLevel(level, speaking) {
  const dbfs = level.dbfs();
  const text = `${Math.round(dbfs)} dBFS`;
  const track = $("level-meter");
  const shown = Math.min(0, Math.max(LEVEL_FLOOR_DBFS, dbfs)); // the bar's range
  track.setAttribute("aria-valuenow", String(Math.round(shown)));
  track.setAttribute("aria-valuetext", text);
  track.querySelector(".level-fill").style.width = `${(1 - shown / LEVEL_FLOOR_DBFS) * 100}%`;
  $("level-value").textContent = text;
  $("level").hidden = false;
  const hint = $("level-hint");
  const state = level.state(speaking);
  if (hint.dataset.state !== state) {
    hint.dataset.state = state;
    hint.textContent = LEVEL_HINTS[state];
  }
}

function hideLevel() {
  $("level").hidden = true;
  $("level-hint").dataset.state = "";
  $("level-hint").textContent = "";
}

function releaseAudio() {
  if (!live) return;
  hideLevel();
  live.media?.getTracks().forEach((track) => track.stop());
  live.source?.disconnect();
  live.node?.disconnect();
  if (live.context && live.context.state !== "closed") live.context.close().catch(() => {});
}

function stopStreaming() {
  if (!live) return;
  $("stop-button").disabled = true;
  releaseAudio();
  live.ready = false;
  if (live.socket.readyState === WebSocket.OPEN) {
    live.socket.send(JSON.stringify({ type: "stop" }));
    setStatus($("live-status"), "Stopping...");
  }
}

function onClosed(event) {
  releaseAudio();
  live = null;
  $("start-button").disabled = false;
  $("stop-button").disabled = true;
  const status = $("live-status");
  if (event.code === 1000) setStatus(status, "Stopped.");
  else if (!status.classList.contains("error")) {
    setStatus(status, `The stream closed (code ${event.code}).`, true);
  }
}

// ---------- wiring ----------

document.addEventListener("DOMContentLoaded", () => {
  makeBars($("upload-bars"));
  makeBars($("live-bars"));
  makeAffect($("upload-affect"));
  makeAffect($("live-affect"));
  timelines.upload = Timeline.emotions($("upload-timeline"), LABELS);
  timelines.uploadAffect = Timeline.affect($("upload-affect-timeline"));
  showUploadView();
  timelines.live = Timeline.emotions($("live-timeline"), LABELS);
  timelines.liveAffect = Timeline.affect($("live-affect-timeline"));
  $("upload-form").addEventListener("submit", upload);
  $("start-button").addEventListener("click", startStreaming);
  $("stop-button").addEventListener("click", stopStreaming);
  $("upload-raw").addEventListener("change", showUploadView);
  $("model").addEventListener("change", showModelInfo);
  loadModels();
});
