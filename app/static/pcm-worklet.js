// AudioWorklet: runs on the audio thread at the AudioContext's native sample rate and posts
// mono Float32 blocks of BLOCK_FRAMES frames to the main thread (which converts them to PCM16
// and sends them to the server, declaring that rate; the server resamples).

const BLOCK_FRAMES = 2048; // ~43 ms at 48 kHz: few messages, little added latency

class PcmCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.block = new Float32Array(BLOCK_FRAMES);
    this.filled = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (channels.length === 0) return true; // no input connected yet
    const frames = channels[0].length;
    for (let i = 0; i < frames; i++) {
      let sum = 0;
      for (let c = 0; c < channels.length; c++) sum += channels[c][i];
      this.block[this.filled++] = sum / channels.length;
      if (this.filled === BLOCK_FRAMES) {
        this.port.postMessage(this.block, [this.block.buffer]);
        this.block = new Float32Array(BLOCK_FRAMES);
        this.filled = 0;
      }
    }
    return true;
  }
}

registerProcessor("pcm-capture", PcmCapture);
