/*
 * gridgen explorer codecs: the file formats the page writes itself, with no dependencies.
 * Written for gridgen; part of gridgen and under its license.
 *
 * - encodeGif(frames, options): an animated GIF89a from ImageData frames. One global palette: the
 *   frames' own colours when they have at most 256 (exact), else 256 by median cut over a sample
 *   of every frame's pixels with nearest-colour mapping through a cache; then the GIF variant of
 *   LZW (variable code size 9..12 bits, clear code at 4096 entries).
 * - muxAnimatedWebp(stills, options): an animated WebP from still WebP files (what a canvas's
 *   toBlob("image/webp") makes): each still's VP8/VP8L/ALPH chunks go into an ANMF frame, under a
 *   VP8X header with the animation flag and an ANIM chunk. No pixel is re-encoded.
 * - zipStore(files): a ZIP archive of stored (uncompressed) files, with UTF-8 names.
 * - crc32(bytes).
 *
 * Published as window.GridgenCodecs.
 */
(function () {
  "use strict";

  /* ---------- byte output ---------- */

  class ByteWriter {
    constructor(size) {
      this.bytes = new Uint8Array(size || 1 << 16);
      this.length = 0;
    }

    reserve(n) {
      if (this.length + n <= this.bytes.length) return;
      let size = this.bytes.length * 2;
      while (size < this.length + n) size *= 2;
      const bigger = new Uint8Array(size);
      bigger.set(this.bytes.subarray(0, this.length));
      this.bytes = bigger;
    }

    byte(b) {
      this.reserve(1);
      this.bytes[this.length++] = b & 0xff;
    }

    u16(v) {
      this.byte(v);
      this.byte(v >>> 8);
    }

    u24(v) {
      this.byte(v);
      this.byte(v >>> 8);
      this.byte(v >>> 16);
    }

    u32(v) {
      this.u16(v & 0xffff);
      this.u16(v >>> 16);
    }

    ascii(text) {
      for (let i = 0; i < text.length; i++) this.byte(text.charCodeAt(i));
    }

    append(array) {
      this.reserve(array.length);
      this.bytes.set(array, this.length);
      this.length += array.length;
    }

    result() {
      return this.bytes.slice(0, this.length);
    }
  }

  /* ---------- GIF: palette ---------- */

  /* Up to `limit` pixels (r, g, b triples) spread evenly over every frame. */
  function samplePixels(frames, limit) {
    const total = frames.reduce((n, f) => n + f.width * f.height, 0);
    const step = Math.max(1, Math.floor(total / limit));
    const sample = [];
    for (const frame of frames) {
      const px = frame.data;
      for (let i = 0; i < px.length; i += 4 * step) sample.push(px[i], px[i + 1], px[i + 2]);
    }
    return new Uint8Array(sample);
  }

  /* Median cut: split the box with the widest channel range (weighted by its pixel count) at the median. */
  function medianCut(sample, colours) {
    const count = sample.length / 3;
    const order = new Uint32Array(count);
    for (let i = 0; i < count; i++) order[i] = i;
    const boxes = [describeBox(sample, order, 0, count)];
    while (boxes.length < colours) {
      let best = -1;
      let bestScore = 0;
      boxes.forEach((box, i) => {
        const score = box.range * Math.sqrt(box.end - box.start);
        if (box.end - box.start > 1 && box.range > 0 && score > bestScore) {
          best = i;
          bestScore = score;
        }
      });
      if (best < 0) break;
      const box = boxes[best];
      const channel = box.channel;
      const part = Array.from(order.subarray(box.start, box.end)).sort(
        (a, b) => sample[a * 3 + channel] - sample[b * 3 + channel],
      );
      order.set(part, box.start);
      const middle = box.start + (part.length >> 1);
      boxes.splice(best, 1, describeBox(sample, order, box.start, middle), describeBox(sample, order, middle, box.end));
    }
    const palette = new Uint8Array(colours * 3);
    boxes.forEach((box, i) => palette.set(box.mean, i * 3));
    return { palette, size: Math.max(1, boxes.length) };
  }

  function describeBox(sample, order, start, end) {
    const low = [255, 255, 255];
    const high = [0, 0, 0];
    const sum = [0, 0, 0];
    for (let i = start; i < end; i++) {
      const at = order[i] * 3;
      for (let c = 0; c < 3; c++) {
        const v = sample[at + c];
        if (v < low[c]) low[c] = v;
        if (v > high[c]) high[c] = v;
        sum[c] += v;
      }
    }
    const ranges = high.map((h, c) => Math.max(0, h - low[c]));
    const channel = ranges.indexOf(Math.max(...ranges));
    const n = Math.max(1, end - start);
    return { start, end, channel, range: ranges[channel], mean: sum.map((s) => Math.round(s / n)) };
  }

  /* When every frame together has at most 256 colours: those colours, and an exact mapping. */
  function exactPalette(frames) {
    const index = new Map();
    for (const frame of frames) {
      const px = frame.data;
      for (let i = 0; i < px.length; i += 4) {
        const key = (px[i] << 16) | (px[i + 1] << 8) | px[i + 2];
        if (!index.has(key)) {
          if (index.size === 256) return null;
          index.set(key, index.size);
        }
      }
    }
    const palette = new Uint8Array(256 * 3);
    for (const [key, i] of index) palette.set([key >> 16, (key >> 8) & 0xff, key & 0xff], i * 3);
    const map = (frame) => {
      const px = frame.data;
      const out = new Uint8Array(frame.width * frame.height);
      for (let i = 0, o = 0; i < px.length; i += 4, o++) out[o] = index.get((px[i] << 16) | (px[i + 1] << 8) | px[i + 2]);
      return out;
    };
    return { palette, size: Math.max(1, index.size), map };
  }

  /* Palette indices of a frame: nearest palette colour, cached per 6-bit-per-channel colour. */
  function mapFrame(frame, palette, size, cache) {
    const px = frame.data;
    const out = new Uint8Array(frame.width * frame.height);
    for (let i = 0, o = 0; i < px.length; i += 4, o++) {
      const r = px[i];
      const g = px[i + 1];
      const b = px[i + 2];
      const key = ((r >> 2) << 12) | ((g >> 2) << 6) | (b >> 2);
      let index = cache[key];
      if (index < 0) {
        let best = Infinity;
        for (let p = 0; p < size; p++) {
          const dr = palette[p * 3] - r;
          const dg = palette[p * 3 + 1] - g;
          const db = palette[p * 3 + 2] - b;
          const d = dr * dr + dg * dg + db * db;
          if (d < best) {
            best = d;
            index = p;
          }
        }
        cache[key] = index;
      }
      out[o] = index;
    }
    return out;
  }

  /* ---------- GIF: LZW ---------- */

  /* GIF LZW of palette indices, packed least significant bit first, cut into 255-byte sub-blocks. */
  function lzw(indices, minCodeSize, out) {
    const clear = 1 << minCodeSize;
    const eoi = clear + 1;
    let codeSize = minCodeSize + 1;
    let next = eoi + 1;
    let table = new Map();
    const packed = new ByteWriter(indices.length + 1024);
    let bits = 0;
    let nbits = 0;
    const emit = (code) => {
      bits |= code << nbits;
      nbits += codeSize;
      while (nbits >= 8) {
        packed.byte(bits & 0xff);
        bits >>>= 8;
        nbits -= 8;
      }
    };
    emit(clear);
    let prefix = indices[0];
    for (let i = 1; i < indices.length; i++) {
      const k = indices[i];
      const key = (prefix << 8) | k;
      const code = table.get(key);
      if (code !== undefined) {
        prefix = code;
        continue;
      }
      emit(prefix);
      if (next === 4096) {
        emit(clear);
        table = new Map();
        next = eoi + 1;
        codeSize = minCodeSize + 1;
      } else {
        if (next >= 1 << codeSize) codeSize++;
        table.set(key, next++);
      }
      prefix = k;
    }
    emit(prefix);
    emit(eoi);
    if (nbits > 0) packed.byte(bits & 0xff);
    const body = packed.result();
    out.byte(minCodeSize);
    for (let at = 0; at < body.length; at += 255) {
      const block = body.subarray(at, at + 255);
      out.byte(block.length);
      out.append(block);
    }
    out.byte(0);
  }

  /*
   * frames: ImageData (or {width, height, data}) of one size. options: {delayMs (per frame, or
   * delays: [ms]), loop (0 = forever), onProgress(i, n)}. Returns a Promise of a Uint8Array; it
   * yields to the page between frames so a long encode keeps the page responsive.
   */
  async function encodeGif(frames, options) {
    const opts = Object.assign({ delayMs: 500, loop: 0 }, options || {});
    if (!frames.length) throw new Error("no frames to encode");
    const width = frames[0].width;
    const height = frames[0].height;
    const exact = exactPalette(frames);
    const { palette, size } = exact || medianCut(samplePixels(frames, 120000), 256);
    const cache = new Int16Array(1 << 18).fill(-1);
    const out = new ByteWriter(width * height * frames.length + 4096);
    out.ascii("GIF89a");
    out.u16(width);
    out.u16(height);
    out.byte(0xf7); // global colour table of 2^(7+1) entries, 8 bits per primary
    out.byte(0); // background colour index
    out.byte(0); // pixel aspect ratio: unspecified
    out.append(palette);
    out.byte(0x21); // application extension: NETSCAPE2.0 loop count
    out.byte(0xff);
    out.byte(11);
    out.ascii("NETSCAPE2.0");
    out.byte(3);
    out.byte(1);
    out.u16(opts.loop);
    out.byte(0);
    for (let i = 0; i < frames.length; i++) {
      const frame = frames[i];
      if (frame.width !== width || frame.height !== height) throw new Error("every frame must have the same size");
      const delay = opts.delays ? opts.delays[i] : opts.delayMs;
      out.byte(0x21); // graphic control extension
      out.byte(0xf9);
      out.byte(4);
      out.byte(0x04); // disposal: leave in place; no transparency
      out.u16(Math.max(2, Math.round(delay / 10)));
      out.byte(0);
      out.byte(0);
      out.byte(0x2c); // image descriptor: the whole screen, no local colour table
      out.u16(0);
      out.u16(0);
      out.u16(width);
      out.u16(height);
      out.byte(0);
      lzw(exact ? exact.map(frame) : mapFrame(frame, palette, size, cache), 8, out);
      if (opts.onProgress) opts.onProgress(i + 1, frames.length);
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
    out.byte(0x3b);
    return out.result();
  }

  /* ---------- animated WebP from still WebP files ---------- */

  function fourcc(bytes, at) {
    return String.fromCharCode(bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]);
  }

  function u32le(bytes, at) {
    return (bytes[at] | (bytes[at + 1] << 8) | (bytes[at + 2] << 16) | (bytes[at + 3] << 24)) >>> 0;
  }

  /* The image chunks (ALPH, VP8 , VP8L) of a still WebP file, as complete chunks with their padding. */
  function webpImageChunks(bytes) {
    if (bytes.length < 20 || fourcc(bytes, 0) !== "RIFF" || fourcc(bytes, 8) !== "WEBP") {
      throw new Error("not a WebP file");
    }
    const chunks = [];
    let alpha = false;
    for (let at = 12; at + 8 <= bytes.length; ) {
      const name = fourcc(bytes, at);
      const size = u32le(bytes, at + 4);
      const end = at + 8 + size + (size & 1);
      if (name === "ALPH" || name === "VP8 " || name === "VP8L") {
        chunks.push(bytes.subarray(at, Math.min(end, bytes.length)));
        if (name === "ALPH" || name === "VP8L") alpha = true;
      }
      at = end;
    }
    if (!chunks.length) throw new Error("the WebP file holds no image data");
    return { chunks, alpha };
  }

  /*
   * stills: [{bytes: Uint8Array (a still WebP), width, height}], all of one size. options:
   * {delayMs or delays: [ms], loop (0 = forever), background: [r, g, b, a]}. Returns a Uint8Array.
   */
  function muxAnimatedWebp(stills, options) {
    const opts = Object.assign({ delayMs: 500, loop: 0, background: [255, 255, 255, 255] }, options || {});
    if (!stills.length) throw new Error("no frames to encode");
    const width = stills[0].width;
    const height = stills[0].height;
    const frames = stills.map((still) => webpImageChunks(still.bytes));
    const body = new ByteWriter(stills.reduce((n, s) => n + s.bytes.length + 32, 64));
    body.ascii("VP8X");
    body.u32(10);
    body.byte(0x02 | (frames.some((f) => f.alpha) ? 0x10 : 0)); // animation (+ alpha)
    body.u24(0);
    body.u24(width - 1);
    body.u24(height - 1);
    body.ascii("ANIM");
    body.u32(6);
    const [r, g, b, a] = opts.background;
    body.byte(b); // background colour is stored B, G, R, A
    body.byte(g);
    body.byte(r);
    body.byte(a);
    body.u16(opts.loop);
    frames.forEach((frame, i) => {
      const still = stills[i];
      if (still.width !== width || still.height !== height) throw new Error("every frame must have the same size");
      const payload = 16 + frame.chunks.reduce((n, c) => n + c.length, 0);
      const delay = opts.delays ? opts.delays[i] : opts.delayMs;
      body.ascii("ANMF");
      body.u32(payload);
      body.u24(0); // X / 2
      body.u24(0); // Y / 2
      body.u24(width - 1);
      body.u24(height - 1);
      body.u24(Math.max(1, Math.round(delay)));
      body.byte(0x02); // do not blend, do not dispose
      for (const chunk of frame.chunks) body.append(chunk);
      if (payload & 1) body.byte(0);
    });
    const chunks = body.result();
    const out = new ByteWriter(chunks.length + 12);
    out.ascii("RIFF");
    out.u32(4 + chunks.length);
    out.ascii("WEBP");
    out.append(chunks);
    return out.result();
  }

  /* ---------- ZIP (stored) ---------- */

  const CRC_TABLE = (() => {
    const table = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c >>> 0;
    }
    return table;
  })();

  function crc32(bytes) {
    let c = 0xffffffff;
    for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  }

  function dosTime(date) {
    return {
      time: (date.getHours() << 11) | (date.getMinutes() << 5) | (date.getSeconds() >> 1),
      date: (Math.max(0, date.getFullYear() - 1980) << 9) | ((date.getMonth() + 1) << 5) | date.getDate(),
    };
  }

  /* files: [{name, bytes: Uint8Array}]. Returns a Uint8Array holding the ZIP archive. */
  function zipStore(files) {
    const encoder = new TextEncoder();
    const stamp = dosTime(new Date());
    const out = new ByteWriter(files.reduce((n, f) => n + f.bytes.length + 2 * f.name.length + 100, 100));
    const central = new ByteWriter(files.length * 64 + 64);
    for (const file of files) {
      const name = encoder.encode(file.name);
      const crc = crc32(file.bytes);
      const offset = out.length;
      out.u32(0x04034b50);
      out.u16(20); // version needed
      out.u16(0x0800); // UTF-8 names
      out.u16(0); // stored
      out.u16(stamp.time);
      out.u16(stamp.date);
      out.u32(crc);
      out.u32(file.bytes.length);
      out.u32(file.bytes.length);
      out.u16(name.length);
      out.u16(0);
      out.append(name);
      out.append(file.bytes);
      central.u32(0x02014b50);
      central.u16(20); // version made by
      central.u16(20);
      central.u16(0x0800);
      central.u16(0);
      central.u16(stamp.time);
      central.u16(stamp.date);
      central.u32(crc);
      central.u32(file.bytes.length);
      central.u32(file.bytes.length);
      central.u16(name.length);
      central.u16(0); // extra
      central.u16(0); // comment
      central.u16(0); // disk
      central.u16(0); // internal attributes
      central.u32(0); // external attributes
      central.u32(offset);
      central.append(name);
    }
    const directory = central.result();
    const start = out.length;
    out.append(directory);
    out.u32(0x06054b50);
    out.u16(0);
    out.u16(0);
    out.u16(files.length);
    out.u16(files.length);
    out.u32(directory.length);
    out.u32(start);
    out.u16(0);
    return out.result();
  }

  window.GridgenCodecs = { encodeGif, muxAnimatedWebp, zipStore, crc32 };
})();
