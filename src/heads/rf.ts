import { cpus } from 'node:os';
import { Rng } from '../linalg/random.ts';
import { BaseHead, defineHead } from './base.ts';
import { classWeights, decodeF32, decodeI32, encodeF32, encodeI32, type HeadDef, type ParamSpecs } from './common.ts';
import type { FitOptions, Matrix } from './types.ts';

/**
 * Random forest of gini trees, built for speed:
 * - every feature is pre-binned once into ≤ maxBins quantile bins (Uint8Array, column-major), so a
 *   split search is one histogram pass over the node's rows plus a scan over ≤ 256 bins;
 * - √d candidate features are drawn per split (not per tree), bootstrap rows per tree;
 * - class weights multiply the bootstrap counts (weighted gini); leaves hold class distributions
 *   and predictProba averages them over trees.
 * Trees are stored flat (one array per node attribute) so save/load and prediction are cheap.
 */
export const paramSpecs: ParamSpecs = {
  nTrees: { type: 'int', default: 100, min: 1, description: 'number of trees' },
  maxDepth: { type: 'int', default: 0, min: 0, description: 'maximum depth (0 = unlimited)' },
  minSamplesLeaf: { type: 'int', default: 1, min: 1, description: 'minimum rows in a leaf' },
  minSamplesSplit: { type: 'int', default: 2, min: 2, description: 'minimum rows to split a node' },
  maxFeatures: {
    type: 'number',
    default: 'sqrt',
    min: 1e-9,
    choices: ['sqrt', 'log2', 'all'],
    description: 'features per split: sqrt | log2 | all | count (>=1) | fraction (<1)',
  },
  maxBins: { type: 'int', default: 256, min: 2, max: 256, description: 'quantile bins per feature' },
  bootstrap: { type: 'boolean', default: true, description: 'bootstrap rows per tree' },
  // scikit-learn's max_samples: tree cost and size grow with the rows each tree sees; past this many
  // training rows each tree gets a bootstrap sample of this size (README "Heads past 100k rows").
  maxSamples: {
    type: 'int',
    default: 20000,
    min: 0,
    description: 'bootstrap sample size per tree when there are more rows (0 = all rows)',
  },
  nJobs: {
    type: 'int',
    default: 0,
    min: 0,
    description: 'threads growing trees (0 = auto: every core for large forests); the forest is the same for any value',
  },
  standardize: {
    type: 'boolean',
    default: false,
    description: 'standardise features (no effect on trees; kept for uniformity)',
  },
};

interface State {
  nTrees: number;
  /** per feature: number of thresholds, then the thresholds, concatenated */
  edgeCount: string;
  edges: string;
  feature: string;
  threshold: string;
  left: string;
  right: string;
  value: string;
  roots: string;
  variant?: string;
}

/**
 * Rows the bin edges are computed from. Quantiles of 50 000 rows place 256 bins as well as all
 * rows do (LightGBM samples 200 000 for the same reason), and sorting 768 columns of 160 000 rows
 * was seconds of every large fit.
 */
export const EDGE_SAMPLE_ROWS = 50_000;

/** Rows per block when X is read feature by feature (64 rows × 768 floats = 192 KB, cache-resident). */
const ROW_BLOCK = 64;

/** Quantile bin edges per feature: x goes to bin b = #{edges ≤ ... } i.e. the first edge ≥ x. */
function computeEdges(X: Matrix, maxBins: number, seed: number): Float32Array[] {
  const { rows: total, cols: d, data } = X;
  const n = Math.min(total, EDGE_SAMPLE_ROWS);
  // A seeded sample of rows when there are more (sorted, so reads stay in row order).
  let rows: Int32Array | null = null;
  if (n < total) {
    const rng = new Rng(seed ^ 0x5eed);
    const picked = new Uint8Array(total);
    for (let k = 0; k < n;) {
      const i = rng.int(total);
      if (!picked[i]) {
        picked[i] = 1;
        k++;
      }
    }
    rows = new Int32Array(n);
    for (let i = 0, k = 0; i < total; i++) if (picked[i]) rows[k++] = i;
  }
  // The sampled rows transposed once, in row blocks (see binMatrix), then each column sorted in place.
  const cols = new Float32Array(n * d);
  for (let k0 = 0; k0 < n; k0 += ROW_BLOCK) {
    const k1 = Math.min(n, k0 + ROW_BLOCK);
    for (let f = 0; f < d; f++) {
      const co = f * n;
      for (let k = k0; k < k1; k++) cols[co + k] = data[(rows ? rows[k]! : k) * d + f]!;
    }
  }
  const edges: Float32Array[] = [];
  for (let f = 0; f < d; f++) {
    const col = cols.subarray(f * n, (f + 1) * n);
    col.sort();
    const cuts: number[] = [];
    let last = -Infinity;
    for (let b = 1; b < maxBins; b++) {
      const pos = Math.floor((b * n) / maxBins);
      if (pos <= 0 || pos >= n) continue;
      const lo = col[pos - 1]!,
        hi = col[pos]!;
      if (hi <= lo) continue;
      const mid = Math.fround((lo + hi) / 2);
      // Edge = midpoint between adjacent distinct values; strictly increasing.
      const e = mid >= hi ? lo : mid;
      if (e > last) {
        cuts.push(e);
        last = e;
      }
    }
    edges.push(Float32Array.from(cuts));
  }
  return edges;
}

/** Column-major bins: bins[f*n + i] = number of edges < x (so x ≤ edges[b] ⇔ bin ≤ b). */
function binMatrix(X: Matrix, edges: Float32Array[], sharedMemory = false): Uint8Array {
  const { rows: n, cols: d, data } = X;
  const bins = new Uint8Array(sharedMemory ? new SharedArrayBuffer(n * d) : new ArrayBuffer(n * d));
  // Blocks of rows: reading one feature of every row walks X with a stride of d floats (a cache
  // miss per value at d = 768); a block of ROW_BLOCK rows stays in cache across all features.
  for (let i0 = 0; i0 < n; i0 += ROW_BLOCK) {
    const i1 = Math.min(n, i0 + ROW_BLOCK);
    for (let f = 0; f < d; f++) {
      const e = edges[f]!;
      const ne = e.length;
      const bo = f * n;
      for (let i = i0; i < i1; i++) {
        const v = data[i * d + f]!;
        let lo = 0,
          hi = ne;
        while (lo < hi) {
          const mid = (lo + hi) >> 1;
          if (e[mid]! < v) lo = mid + 1;
          else hi = mid;
        }
        bins[bo + i] = lo;
      }
    }
  }
  return bins;
}

class NodeStore {
  feature: Int32Array;
  threshold: Int32Array;
  left: Int32Array;
  right: Int32Array;
  value: Float32Array;
  size = 0;
  constructor(
    private readonly K: number,
    cap = 1024,
  ) {
    this.feature = new Int32Array(cap);
    this.threshold = new Int32Array(cap);
    this.left = new Int32Array(cap);
    this.right = new Int32Array(cap);
    this.value = new Float32Array(cap * K);
  }
  add(): number {
    if (this.size === this.feature.length) {
      const cap = this.size * 2;
      const grow = <T extends Int32Array | Float32Array>(a: T, c: number): T => {
        const b = new (a.constructor as new (n: number) => T)(c);
        b.set(a);
        return b;
      };
      this.feature = grow(this.feature, cap);
      this.threshold = grow(this.threshold, cap);
      this.left = grow(this.left, cap);
      this.right = grow(this.right, cap);
      this.value = grow(this.value, cap * this.K);
    }
    this.feature[this.size] = -1;
    return this.size++;
  }
}

/** Everything a thread needs to grow trees (typed arrays; bins and y shared across workers). */
export interface GrowContext {
  bins: Uint8Array;
  n: number;
  d: number;
  K: number;
  y: Int32Array;
  cw: Float64Array;
  nBins: Int32Array;
  /** 0 = unlimited. */
  maxDepth: number;
  minLeaf: number;
  minSplit: number;
  mtry: number;
  bootstrap: boolean;
  draws: number;
}

/** Flat node arrays of some trees; node numbers local to this part. */
export interface GrownTrees {
  feature: Int32Array;
  threshold: Int32Array;
  left: Int32Array;
  right: Int32Array;
  value: Float32Array;
  roots: Int32Array;
}

/** Grow one tree per seed (tree t from seeds[t]), nodes numbered in tree order. */
export function growTrees(ctx: GrowContext, seeds: Uint32Array): GrownTrees {
  const { bins, n, d, K, y, cw, nBins, minLeaf, minSplit, mtry, draws } = ctx;
  const maxDepth = ctx.maxDepth > 0 ? ctx.maxDepth : Infinity;
  const store = new NodeStore(K, 4096);
  const roots = new Int32Array(seeds.length);
  const idx = new Int32Array(n); // rows of the current tree, partitioned per node
  const w = new Float64Array(n); // bootstrap count × class weight
  const hist = new Float64Array(256 * K);
  const hcnt = new Int32Array(256);
  const tot = new Float64Array(K);
  const leftW = new Float64Array(K);
  const feats = new Int32Array(d);
  // Compact per-tree copies (see below); a sample has at most min(n, draws) distinct rows.
  const cap = ctx.bootstrap ? Math.min(n, draws) : 0;
  const cb = new Uint8Array(cap * d);
  const cy = new Int32Array(cap);
  const cwt = new Float64Array(cap);
  // Explicit stack of nodes to expand: [node, start, end, depth].
  const stack: number[] = [];
  for (let t = 0; t < roots.length; t++) {
    const trng = new Rng(seeds[t]!);
    // The feature draws permute `feats` in place; start every tree from the identity so a tree
    // depends on its seed alone (and not on which trees the same thread grew before it).
    for (let f = 0; f < d; f++) feats[f] = f;
    w.fill(0);
    let m = 0;
    if (ctx.bootstrap) {
      for (let s = 0; s < draws; s++) w[trng.int(n)]!++;
      for (let i = 0; i < n; i++)
        if (w[i]! > 0) {
          idx[m++] = i;
          w[i]! *= cw[y[i]!]!;
        }
    } else {
      for (let i = 0; i < n; i++) {
        idx[m++] = i;
        w[i] = cw[y[i]!]!;
      }
    }
    // A bootstrap sample touches a fraction of the rows (≈ 19 000 of 160 000 at maxSamples=20000):
    // copy their bins, labels and weights into compact per-tree arrays so every histogram pass
    // reads short columns that stay in cache instead of scattered bytes of n-long ones. The row
    // order is kept, so the tree is the same as grown on the full arrays.
    let tb = bins,
      tn = n,
      ty = y,
      tw = w;
    if (m <= n >> 1) {
      tb = cb.subarray(0, m * d);
      for (let f = 0; f < d; f++) {
        const src = f * n,
          dst = f * m;
        for (let k = 0; k < m; k++) tb[dst + k] = bins[src + idx[k]!]!;
      }
      ty = cy.subarray(0, m);
      tw = cwt.subarray(0, m);
      for (let k = 0; k < m; k++) {
        const i = idx[k]!;
        ty[k] = y[i]!;
        tw[k] = w[i]!;
        idx[k] = k;
      }
      tn = m;
    }
    const root = store.add();
    roots[t] = root;
    stack.push(root, 0, m, 0);
    while (stack.length > 0) {
      const depth = stack.pop()!,
        end = stack.pop()!,
        start = stack.pop()!,
        node = stack.pop()!;
      tot.fill(0);
      let W = 0;
      for (let s = start; s < end; s++) {
        const i = idx[s]!;
        tot[ty[i]!]! += tw[i]!;
      }
      let nonzero = 0;
      for (let c = 0; c < K; c++) {
        W += tot[c]!;
        if (tot[c]! > 0) nonzero++;
      }
      const vo = node * K;
      for (let c = 0; c < K; c++) store.value[vo + c] = W > 0 ? tot[c]! / W : 1 / K;
      const count = end - start;
      if (nonzero <= 1 || depth >= maxDepth || count < minSplit) continue;

      let parentSq = 0;
      for (let c = 0; c < K; c++) parentSq += tot[c]! * tot[c]!;
      const parentScore = parentSq / W;
      let bestScore = parentScore + 1e-12 * W;
      let bestF = -1,
        bestB = -1;
      // Draw features without replacement per split (partial Fisher-Yates); keep drawing past
      // features constant in the node as scikit-learn does, until mtry usable ones were examined.
      let examined = 0;
      for (let q = 0; q < d && examined < mtry; q++) {
        const r = q + trng.int(d - q);
        const f = feats[r]!;
        feats[r] = feats[q]!;
        feats[q] = f;
        const nb = nBins[f]!;
        if (nb < 2) continue;
        // hist/hcnt are all zero here: each feature clears only the bins its rows touched
        // ([bMin, bMax]), and the scan below walks only that range. Deep nodes hold a few rows,
        // so clearing and scanning all 256 bins per feature was most of a large tree's time.
        const bo = f * tn;
        let bMin = nb,
          bMax = -1;
        for (let s = start; s < end; s++) {
          const i = idx[s]!;
          const b = tb[bo + i]!;
          hist[b * K + ty[i]!]! += tw[i]!;
          hcnt[b]!++;
          if (b < bMin) bMin = b;
          if (b > bMax) bMax = b;
        }
        // Constant within this node (common for ReLU features deep in a tree): no split possible,
        // and like scikit-learn it does not count towards the mtry features examined.
        if (bMin === bMax) {
          hist.fill(0, bMin * K, (bMin + 1) * K);
          hcnt[bMin] = 0;
          continue;
        }
        examined++;
        leftW.fill(0);
        let WL = 0,
          nL = 0;
        // Bins past bMax − 1 would put every row on the left: no split there.
        for (let b = bMin; b < bMax; b++) {
          const hc = hcnt[b]!;
          if (hc === 0) continue;
          nL += hc;
          for (let c = 0; c < K; c++) {
            const h = hist[b * K + c]!;
            leftW[c]! += h;
            WL += h;
          }
          if (nL < minLeaf) continue;
          if (count - nL < minLeaf) break;
          const WR = W - WL;
          if (WL <= 0 || WR <= 0) continue;
          let sl = 0,
            sr = 0;
          for (let c = 0; c < K; c++) {
            const l = leftW[c]!,
              r2 = tot[c]! - l;
            sl += l * l;
            sr += r2 * r2;
          }
          const score = sl / WL + sr / WR;
          if (score > bestScore) {
            bestScore = score;
            bestF = f;
            bestB = b;
          }
        }
        hist.fill(0, bMin * K, (bMax + 1) * K);
        hcnt.fill(0, bMin, bMax + 1);
      }
      if (bestF < 0) continue;
      // Partition idx[start,end) so rows with bin ≤ bestB come first.
      const bo = bestF * tn;
      let lo = start,
        hi = end - 1;
      while (lo <= hi) {
        if (tb[bo + idx[lo]!]! <= bestB) lo++;
        else {
          const tmp = idx[lo]!;
          idx[lo] = idx[hi]!;
          idx[hi] = tmp;
          hi--;
        }
      }
      const l = store.add();
      const r = store.add();
      store.feature[node] = bestF;
      store.threshold[node] = bestB;
      store.left[node] = l;
      store.right[node] = r;
      stack.push(r, lo, end, depth + 1);
      stack.push(l, start, lo, depth + 1);
    }
  }
  const sz = store.size;
  return {
    feature: store.feature.slice(0, sz),
    threshold: store.threshold.slice(0, sz),
    left: store.left.slice(0, sz),
    right: store.right.slice(0, sz),
    value: store.value.slice(0, sz * K),
    roots,
  };
}

/** Parts grown in order → one forest: node numbers offset so the result equals one sequential run. */
export function concatForests(parts: readonly GrownTrees[], K: number): GrownTrees {
  const total = parts.reduce((a, q) => a + q.feature.length, 0);
  const out: GrownTrees = {
    feature: new Int32Array(total),
    threshold: new Int32Array(total),
    left: new Int32Array(total),
    right: new Int32Array(total),
    value: new Float32Array(total * K),
    roots: new Int32Array(parts.reduce((a, q) => a + q.roots.length, 0)),
  };
  let off = 0,
    r = 0;
  for (const q of parts) {
    out.feature.set(q.feature, off);
    out.threshold.set(q.threshold, off);
    for (let i = 0; i < q.left.length; i++) {
      // Leaves keep left = right = 0 (never followed: feature = -1).
      out.left[off + i] = q.feature[i]! >= 0 ? q.left[i]! + off : q.left[i]!;
      out.right[off + i] = q.feature[i]! >= 0 ? q.right[i]! + off : q.right[i]!;
    }
    out.value.set(q.value, off * K);
    for (const root of q.roots) out.roots[r++] = root + off;
    off += q.feature.length;
  }
  return out;
}

/**
 * Threads for growing the forest: nJobs, or (0 = auto) every core when the forest is big enough
 * for worker start-up (~1 s under tsx) to pay off. Measured on the 160 000-row compare: README
 * "Heads past 100k rows".
 */
function forestJobs(nJobs: number, rowsPerTree: number, nTrees: number): number {
  if (nJobs > 0) return Math.min(nJobs, nTrees);
  return rowsPerTree * nTrees >= 500_000 ? Math.min(cpus().length, nTrees) : 1;
}

/** A copy of y in shared memory (workers read it without a copy each). */
function shared(y: Int32Array): Int32Array {
  const out = new Int32Array(new SharedArrayBuffer(y.byteLength));
  out.set(y);
  return out;
}

export class RandomForestHead extends BaseHead {
  readonly kind = 'rf';
  /** Which variant ran and why (compare puts it in the report). */
  variant_?: string;
  edges_?: Float32Array[];
  feature_?: Int32Array;
  threshold_?: Int32Array;
  left_?: Int32Array;
  right_?: Int32Array;
  value_?: Float32Array;
  roots_?: Int32Array;

  private featuresPerSplit(d: number): number {
    const m = this.params.maxFeatures;
    if (m === 'sqrt') return Math.max(1, Math.floor(Math.sqrt(d)));
    if (m === 'log2') return Math.max(1, Math.floor(Math.log2(d)));
    if (m === 'all') return d;
    const v = m as number;
    return Math.min(d, Math.max(1, v < 1 ? Math.floor(v * d) : Math.floor(v)));
  }

  protected async fitImpl(X: Matrix, y: Int32Array, opts: FitOptions): Promise<void> {
    const { rows: n, cols: d } = X;
    const K = opts.nClasses;
    const p = this.params;
    const edges = computeEdges(X, p.maxBins as number, opts.seed ?? 0);
    const cw = classWeights(y, K, opts.classWeight);
    const cap = p.maxSamples as number;
    const draws = p.bootstrap && cap > 0 && n > cap ? cap : n;
    this.variant_ =
      draws < n
        ? `each tree on a bootstrap sample of ${draws} of ${n} rows (maxSamples=${cap}, as scikit-learn's max_samples; tree cost grows with the rows per tree)`
        : undefined;
    const nTrees = p.nTrees as number;
    // One seed per tree, drawn in tree order: a tree depends on its seed only, so the forest is the
    // same whichever thread grows which tree.
    const rng = new Rng(opts.seed ?? 0);
    const seeds = Uint32Array.from({ length: nTrees }, () => rng.nextU32());
    const jobs = forestJobs(p.nJobs as number, draws, nTrees);
    const ctx: GrowContext = {
      bins: binMatrix(X, edges, jobs > 1),
      n,
      d,
      K,
      y: jobs > 1 ? shared(y) : y,
      cw,
      nBins: Int32Array.from(edges, (e) => e.length + 1),
      maxDepth: (p.maxDepth as number) > 0 ? (p.maxDepth as number) : 0,
      minLeaf: p.minSamplesLeaf as number,
      minSplit: Math.max(p.minSamplesSplit as number, 2 * (p.minSamplesLeaf as number)),
      mtry: this.featuresPerSplit(d),
      bootstrap: p.bootstrap === true,
      draws,
    };
    const parts: GrownTrees[] = [];
    if (jobs <= 1) parts.push(growTrees(ctx, seeds));
    else {
      const { growTreesInWorkers } = await import('./rf-pool.ts');
      parts.push(...(await growTreesInWorkers(ctx, seeds, jobs)));
    }
    const forest = concatForests(parts, K);
    this.edges_ = edges;
    this.feature_ = forest.feature;
    this.threshold_ = forest.threshold;
    this.left_ = forest.left;
    this.right_ = forest.right;
    this.value_ = forest.value;
    this.roots_ = forest.roots;
  }

  protected async probaImpl(X: Matrix): Promise<Matrix> {
    const { rows: n } = X;
    const K = this.nClasses_!;
    const bins = binMatrix(X, this.edges_!);
    const out = new Float64Array(n * K);
    const {
      feature_: feat,
      threshold_: thr,
      left_: L,
      right_: R,
      value_: V,
      roots_: roots,
    } = this as Required<RandomForestHead>;
    for (let t = 0; t < roots.length; t++) {
      const root = roots[t]!;
      for (let i = 0; i < n; i++) {
        let node = root;
        let f = feat[node]!;
        while (f >= 0) {
          node = bins[f * n + i]! <= thr[node]! ? L[node]! : R[node]!;
          f = feat[node]!;
        }
        const vo = node * K,
          o = i * K;
        for (let c = 0; c < K; c++) out[o + c]! += V[vo + c]!;
      }
    }
    const P = new Float32Array(n * K);
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let c = 0; c < K; c++) s += out[i * K + c]!;
      for (let c = 0; c < K; c++) P[i * K + c] = out[i * K + c]! / s;
    }
    return { data: P, rows: n, cols: K };
  }

  protected getState(): State {
    const counts = Int32Array.from(this.edges_!, (e) => e.length);
    const all = new Float32Array(counts.reduce((a, b) => a + b, 0));
    let o = 0;
    for (const e of this.edges_!) {
      all.set(e, o);
      o += e.length;
    }
    return {
      nTrees: this.roots_!.length,
      edgeCount: encodeI32(counts),
      edges: encodeF32(all),
      feature: encodeI32(this.feature_!),
      threshold: encodeI32(this.threshold_!),
      left: encodeI32(this.left_!),
      right: encodeI32(this.right_!),
      value: encodeF32(this.value_!),
      roots: encodeI32(this.roots_!),
      ...(this.variant_ ? { variant: this.variant_ } : {}),
    };
  }

  protected setState(s: unknown): void {
    const st = s as State;
    const counts = decodeI32(st.edgeCount);
    const all = decodeF32(st.edges);
    const edges: Float32Array[] = [];
    let o = 0;
    for (const c of counts) {
      edges.push(all.slice(o, o + c));
      o += c;
    }
    this.edges_ = edges;
    this.feature_ = decodeI32(st.feature);
    this.threshold_ = decodeI32(st.threshold);
    this.left_ = decodeI32(st.left);
    this.right_ = decodeI32(st.right);
    this.value_ = decodeF32(st.value);
    this.roots_ = decodeI32(st.roots);
    this.variant_ = st.variant;
  }
}

export const rfHead: HeadDef = defineHead('rf', paramSpecs, (params) => new RandomForestHead(params), {
  rows: { rf: { params: {}, tieRank: 4 } },
  tuneGrid: { nTrees: [50, 100, 200], maxDepth: [0, 10] },
  quickParams: { nTrees: 25 },
  savesDirectory: false,
});
