// The microphone's input level while streaming, measured in the page from the Float32 blocks the
// worklet posts (the audio that is then sent as PCM16): the RMS of the last second in dBFS, and
// whether a sample in it reached full scale. The model hears each window at one speech level
// (the level stage), but too little signal leaves mostly noise to hear, and a clipped signal is
// distorted before it ever reaches the server.
"use strict";

const LEVEL_WINDOW_S = 1.0; // long enough to span a word and its gaps, short enough to follow
// The "too quiet" hint: while the server hears speech, below this RMS. The speech gate was
// measured to hear corpus speech down to an active level of -55 dBFS (98 % of windows,
// benchmarks/results/gate.md); below that nothing was measured. It is not shown in pauses:
// a quiet room is not a quiet voice.
const QUIET_DBFS = -55;
const CLIP_PEAK = 10 ** (-0.1 / 20); // within 0.1 dB of full scale counts as clipping
const LEVEL_FLOOR_DBFS = -60; // the meter's bottom; the number itself goes lower
const SILENCE_DBFS = -120; // shown for digital silence instead of minus infinity

class InputLevel {
  constructor(sampleRate) {
    this.windowFrames = Math.round(LEVEL_WINDOW_S * sampleRate);
    this.blocks = []; // {frames, sumSquares, peak}, oldest first, covering windowFrames
    this.frames = 0;
  }

  // One block of samples in -1..1 (the worklet's Float32Array).
  push(block) {
    let sumSquares = 0;
    let peak = 0;
    for (const s of block) {
      sumSquares += s * s;
      peak = Math.max(peak, Math.abs(s));
    }
    this.blocks.push({ frames: block.length, sumSquares, peak });
    this.frames += block.length;
    while (this.blocks.length > 1 && this.frames - this.blocks[0].frames >= this.windowFrames) {
      this.frames -= this.blocks.shift().frames;
    }
  }

  // RMS of the last LEVEL_WINDOW_S, dB relative to a full-scale square wave.
  dbfs() {
    const sumSquares = this.blocks.reduce((sum, b) => sum + b.sumSquares, 0);
    if (this.frames === 0 || sumSquares === 0) return SILENCE_DBFS;
    return Math.max(SILENCE_DBFS, 10 * Math.log10(sumSquares / this.frames));
  }

  // "clipping" (a sample at full scale), "quiet" (speech, and below QUIET_DBFS) or "ok";
  // speaking: the server's last window was speech.
  state(speaking) {
    if (this.blocks.some((b) => b.peak >= CLIP_PEAK)) return "clipping";
    return speaking && this.dbfs() < QUIET_DBFS ? "quiet" : "ok";
  }
}
