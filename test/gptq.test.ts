import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { addPatchGrams, gptqRound, upperCholeskyOfInverse, type ConvGeometry } from '../src/backbone/gptq.ts';
import { prepareBackbone } from '../src/backbone/backbone.ts';
import { convertedModel, weightScales } from '../src/backbone/quantize.ts';
import { decodeForModel } from '../src/images/decode.ts';
import { silentLogger } from '../src/util/log.ts';
import { SHARED_DATA } from './helpers.ts';

/** Real photos as the model's normalised NCHW input ([-1, 1]), at a small size to keep the test cheap. */
async function photos(n: number, h: number, w: number): Promise<{ x: Float32Array; dims: number[] }> {
  const b = await prepareBackbone({ model: 'mobilenet_v1_0.75_224', log: silentLogger });
  const pre = { ...b.config.preprocessing, size: [h, w] as [number, number] };
  const dir = join(SHARED_DATA(), 'train', 'cats');
  const files = readdirSync(dir).sort().slice(0, n);
  const x = new Float32Array(n * 3 * h * w);
  for (const [k, f] of files.entries()) {
    const px = await decodeForModel(readFileSync(join(dir, f)), pre, { maxPixels: 1e8 });
    for (let i = 0; i < h * w; i++) for (let c = 0; c < 3; c++) x[(k * 3 + c) * h * w + i] = px[i * 3 + c]! / 127.5 - 1;
  }
  return { x, dims: [n, 3, h, w] };
}

/** Direct convolution (no bias) of NCHW x, weights [cout, cin/group, kh, kw]: the reference for the Gram matrices. */
function conv(x: Float32Array, dims: number[], w: Float64Array, cout: number, g: ConvGeometry): Float64Array {
  const [n, c, hh, ww] = dims as [number, number, number, number];
  const [kh, kw] = g.kernel;
  const cg = c / g.group;
  const oh = Math.floor((hh + g.pads[0] + g.pads[2] - kh) / g.strides[0]) + 1;
  const ow = Math.floor((ww + g.pads[1] + g.pads[3] - kw) / g.strides[1]) + 1;
  const y = new Float64Array(n * cout * oh * ow);
  const perGroup = cout / g.group;
  for (let b = 0; b < n; b++)
    for (let o = 0; o < cout; o++) {
      const grp = Math.floor(o / perGroup);
      for (let oy = 0; oy < oh; oy++)
        for (let ox = 0; ox < ow; ox++) {
          let s = 0;
          for (let ci = 0; ci < cg; ci++)
            for (let ky = 0; ky < kh; ky++)
              for (let kx = 0; kx < kw; kx++) {
                const iy = oy * g.strides[0] + ky - g.pads[0];
                const ix = ox * g.strides[1] + kx - g.pads[1];
                if (iy < 0 || iy >= hh || ix < 0 || ix >= ww) continue;
                s += w[((o * cg + ci) * kh + ky) * kw + kx]! * x[((b * c + grp * cg + ci) * hh + iy) * ww + ix]!;
              }
          y[((b * cout + o) * oh + oy) * ow + ox] = s;
        }
    }
  return y;
}

const quad = (g: Float64Array, v: ArrayLike<number>, d: number): number => {
  let s = 0;
  for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) s += v[i]! * g[i * d + j]! * v[j]!;
  return s;
};

test("patch Gram matrices: wᵀGw equals the conv output's energy on real photos (full and depthwise, stride 2, TF's asymmetric pads)", async () => {
  const { x, dims } = await photos(2, 37, 30); // odd sizes: the padded edge matters
  const weights = (len: number): Float64Array => Float64Array.from({ length: len }, (_, i) => Math.sin(i * 1.7 + 0.3));
  for (const g of [
    { kernel: [3, 3], strides: [2, 2], pads: [0, 0, 1, 1], group: 1 },
    { kernel: [3, 3], strides: [1, 1], pads: [1, 1, 1, 1], group: 3 },
  ] as ConvGeometry[]) {
    const cout = g.group === 1 ? 2 : 3;
    const d = (3 / g.group) * 9;
    const w = weights(cout * d);
    const grams: Float64Array[] = [];
    // Two calls (one image each) accumulate like one call with both.
    const per = x.length / 2;
    addPatchGrams(grams, x.subarray(0, per), [1, ...dims.slice(1)], g);
    addPatchGrams(grams, x.subarray(per), [1, ...dims.slice(1)], g);
    assert.equal(grams.length, g.group);
    const y = conv(x, dims, w, cout, g);
    const perGroup = cout / g.group;
    for (let o = 0; o < cout; o++) {
      const grp = Math.floor(o / perGroup);
      const planes = y.length / (dims[0]! * cout);
      let energy = 0;
      for (let b = 0; b < dims[0]!; b++)
        for (let i = 0; i < planes; i++) energy += y[(b * cout + o) * planes + i]! ** 2;
      const viaGram = quad(grams[grp]!, w.subarray(o * d, (o + 1) * d), d);
      assert.ok(Math.abs(viaGram - energy) <= 1e-9 * energy, `group ${g.group}, channel ${o}: ${viaGram} vs ${energy}`);
    }
  }
});

test('upperCholeskyOfInverse: upper triangular U with UᵀU = H⁻¹', () => {
  const d = 7;
  const a = Float64Array.from({ length: d * d }, (_, i) => Math.cos(i * 0.9) + (i % (d + 1) === 0 ? 3 : 0));
  const h = new Float64Array(d * d);
  for (let i = 0; i < d; i++)
    for (let j = 0; j < d; j++) for (let k = 0; k < d; k++) h[i * d + j] += a[i * d + k]! * a[j * d + k]!;
  const u = upperCholeskyOfInverse(h, d)!;
  for (let i = 0; i < d; i++) for (let j = 0; j < i; j++) assert.equal(u[i * d + j], 0);
  // (UᵀU) H = I
  for (let i = 0; i < d; i++)
    for (let j = 0; j < d; j++) {
      let s = 0;
      for (let k = 0; k < d; k++) {
        let inv = 0;
        for (let m = 0; m < d; m++) inv += u[m * d + i]! * u[m * d + k]!;
        s += inv * h[k * d + j]!;
      }
      assert.ok(Math.abs(s - (i === j ? 1 : 0)) < 1e-9, `(${i},${j}) ${s}`);
    }
  assert.equal(upperCholeskyOfInverse(new Float64Array([1, 2, 2, 1]), 2), null); // not positive definite
});

test("GPTQ rounding: nearest for uncorrelated inputs; on MobileNet's first conv over real photo patches, far less output error than nearest", async () => {
  const b = await prepareBackbone({ model: 'mobilenet_v1_0.75_224', log: silentLogger });
  const model = await convertedModel(b);
  const first = model.graph.nodes.find((n) => n.opType === 'Conv')!;
  const wt = model.graph.initializers.find((t) => t.name === first.inputs[1])!;
  const wf = new Float32Array(wt.raw.slice().buffer);
  const [cout, cin, kh, kw] = wt.dims as [number, number, number, number];
  const d = cin * kh * kw;
  const qmax = 127;
  const scales = weightScales(wf, cout, qmax, undefined, 1);
  const nearest = Int8Array.from(wf, (v, i) => Math.round(v / scales[Math.floor(i / d)]!));

  // A diagonal H (inputs uncorrelated): no error to compensate, so GPTQ is round-to-nearest.
  const diag = new Float64Array(d * d);
  for (let i = 0; i < d; i++) diag[i * d + i] = 1 + (i % 5);
  assert.deepEqual(gptqRound(wf, cout, d, diag, scales, qmax), nearest);

  const { x, dims } = await photos(4, 64, 64);
  const grams: Float64Array[] = [];
  addPatchGrams(grams, x, dims, { kernel: [kh, kw], strides: [2, 2], pads: [0, 0, 1, 1], group: 1 });
  const q = gptqRound(wf, cout, d, grams[0]!, scales, qmax);
  const err = (ints: Int8Array): number => {
    let e = 0;
    for (let o = 0; o < cout; o++) {
      const diff = Array.from({ length: d }, (_, i) => wf[o * d + i]! - ints[o * d + i]! * scales[o]!);
      e += quad(grams[0]!, diff, d);
    }
    return e;
  };
  assert.ok(q.every((v) => Math.abs(v) <= qmax));
  const ratio = err(q) / err(nearest);
  // Measured: 0.050 (27-wide patches of neighbouring pixels are strongly correlated).
  assert.ok(ratio < 0.2, `GPTQ / nearest output error ${ratio}`);
  // Deterministic.
  assert.deepEqual(gptqRound(wf, cout, d, grams[0]!, scales, qmax), q);
});
