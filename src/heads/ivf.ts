import { rowSqNorms } from '../linalg/matmul.ts';
import { matmulABtOrt } from '../linalg/ort-gemm.ts';
import { Rng } from '../linalg/random.ts';

/**
 * Inverted-file index for nearest-neighbour search (the IVF of FAISS, Jégou et al. 2011): k-means
 * splits the training rows into `nlist` cells; a query scans only the rows of its `nprobe` nearest
 * cells. Exact distances inside the scanned cells, so the answer equals brute force whenever the
 * true neighbours lie in those cells (recall measured in README "Heads past 100k rows").
 * Rows are stored grouped by cell (`order` maps back to the caller's row numbers); each cell is
 * scanned with one GEMM against all the queries that probe it.
 */
export interface IvfParts {
  nlist: number;
  centroids: Float32Array;
  offsets: Int32Array;
  order: Int32Array;
}

/** Seeded k-means (Lloyd) on a sample; empty cells are re-seeded with a random row. */
export async function kmeans(
  X: Float32Array,
  n: number,
  d: number,
  k: number,
  iters: number,
  rng: Rng,
): Promise<Float32Array> {
  const C = new Float32Array(k * d);
  const init = new Set<number>();
  while (init.size < Math.min(k, n)) init.add(rng.int(n));
  [...init].forEach((i, c) => C.set(X.subarray(i * d, (i + 1) * d), c * d));
  const assign = new Int32Array(n);
  const sums = new Float64Array(k * d);
  const counts = new Int32Array(k);
  for (let it = 0; it < iters; it++) {
    await assignNearest(X, n, d, C, k, assign);
    sums.fill(0);
    counts.fill(0);
    for (let i = 0; i < n; i++) {
      const c = assign[i]!;
      counts[c]!++;
      for (let j = 0; j < d; j++) sums[c * d + j]! += X[i * d + j]!;
    }
    for (let c = 0; c < k; c++) {
      if (counts[c] === 0) {
        const i = rng.int(n);
        C.set(X.subarray(i * d, (i + 1) * d), c * d);
        continue;
      }
      for (let j = 0; j < d; j++) C[c * d + j] = sums[c * d + j]! / counts[c]!;
    }
  }
  return C;
}

/** Nearest centroid of every row (blocked GEMM). */
export async function assignNearest(
  X: Float32Array,
  n: number,
  d: number,
  C: Float32Array,
  k: number,
  out: Int32Array,
): Promise<void> {
  const cSq = rowSqNorms(C, k, d);
  const block = 4096;
  for (let r0 = 0; r0 < n; r0 += block) {
    const rows = Math.min(block, n - r0);
    const S = await matmulABtOrt(X.subarray(r0 * d, (r0 + rows) * d), rows, C, k, d);
    for (let r = 0; r < rows; r++) {
      let best = 0;
      let bestV = Infinity;
      for (let c = 0; c < k; c++) {
        const v = cSq[c]! - 2 * S[r * k + c]!;
        if (v < bestV) {
          bestV = v;
          best = c;
        }
      }
      out[r0 + r] = best;
    }
  }
}

/** Build the cells: centroids from k-means on a sample of at most 64 rows per cell, then every row assigned. */
export async function buildIvf(X: Float32Array, n: number, d: number, nlist: number, seed: number): Promise<IvfParts> {
  const rng = new Rng(seed);
  const sampleN = Math.min(n, nlist * 64);
  let sample = X;
  if (sampleN < n) {
    sample = new Float32Array(sampleN * d);
    const picked = new Set<number>();
    while (picked.size < sampleN) picked.add(rng.int(n));
    [...picked].sort((a, b) => a - b).forEach((i, t) => sample.set(X.subarray(i * d, (i + 1) * d), t * d));
  }
  const centroids = await kmeans(sample, sampleN, d, nlist, 10, rng);
  const assign = new Int32Array(n);
  await assignNearest(X, n, d, centroids, nlist, assign);
  const offsets = new Int32Array(nlist + 1);
  for (let i = 0; i < n; i++) offsets[assign[i]! + 1]!++;
  for (let c = 0; c < nlist; c++) offsets[c + 1]! += offsets[c]!;
  const fill = offsets.slice(0, nlist);
  const order = new Int32Array(n);
  for (let i = 0; i < n; i++) order[fill[assign[i]!]!++] = i;
  return { nlist, centroids, offsets, order };
}

/**
 * k nearest stored rows (squared euclidean) of each query, scanning `nprobe` cells per query.
 * `Xs` holds the stored rows in cell order (row t = caller's row order[t]); results are positions in Xs.
 */
export async function searchIvf(
  ivf: IvfParts,
  Xs: Float32Array,
  xsSq: Float64Array,
  d: number,
  Q: Float32Array,
  nq: number,
  k: number,
  nprobe: number,
): Promise<{ dist: Float64Array; idx: Int32Array }> {
  const dist = new Float64Array(nq * k).fill(Infinity);
  const idx = new Int32Array(nq * k).fill(-1);
  const probe = Math.min(nprobe, ivf.nlist);
  const cSq = rowSqNorms(ivf.centroids, ivf.nlist, d);
  const qSq = rowSqNorms(Q, nq, d);
  const block = 4096;
  for (let q0 = 0; q0 < nq; q0 += block) {
    const rows = Math.min(block, nq - q0);
    const Qb = Q.subarray(q0 * d, (q0 + rows) * d);
    const S = await matmulABtOrt(Qb, rows, ivf.centroids, ivf.nlist, d);
    // Cells → queries of this block that probe them.
    const probers: number[][] = Array.from({ length: ivf.nlist }, () => []);
    const cand = new Float64Array(ivf.nlist);
    const ids = Int32Array.from({ length: ivf.nlist }, (_, c) => c);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < ivf.nlist; c++) cand[c] = cSq[c]! - 2 * S[r * ivf.nlist + c]!;
      ids.sort((a, b) => cand[a]! - cand[b]! || a - b);
      for (let t = 0; t < probe; t++) probers[ids[t]!]!.push(r);
    }
    for (let c = 0; c < ivf.nlist; c++) {
      const qs = probers[c]!;
      const start = ivf.offsets[c]!;
      const size = ivf.offsets[c + 1]! - start;
      if (qs.length === 0 || size === 0) continue;
      const Qc = new Float32Array(qs.length * d);
      qs.forEach((r, t) => Qc.set(Qb.subarray(r * d, (r + 1) * d), t * d));
      const D = await matmulABtOrt(Qc, qs.length, Xs.subarray(start * d, (start + size) * d), size, d);
      qs.forEach((r, t) => {
        const q = q0 + r;
        const bo = q * k;
        for (let j = 0; j < size; j++) {
          const v = Math.max(0, qSq[q]! + xsSq[start + j]! - 2 * D[t * size + j]!);
          const pos = start + j;
          // Insertion into the sorted top-k; ties keep the lower stored position.
          if (v > dist[bo + k - 1]! || (v === dist[bo + k - 1]! && pos > idx[bo + k - 1]!)) continue;
          let p = k - 1;
          while (p > 0 && (dist[bo + p - 1]! > v || (dist[bo + p - 1]! === v && idx[bo + p - 1]! > pos))) {
            dist[bo + p] = dist[bo + p - 1]!;
            idx[bo + p] = idx[bo + p - 1]!;
            p--;
          }
          dist[bo + p] = v;
          idx[bo + p] = pos;
        }
      });
    }
  }
  return { dist, idx };
}
