import { convertKerasGraph, type WeightMap } from '../backbone/convert.ts';
import type { KerasGraph } from '../backbone/keras-graph.ts';
import { encodeModel } from '../onnx/write.ts';
import { OrtFeatureRunner } from '../backbone/ort-runner.ts';
import type { Preprocessing } from '../backbone/preprocess.ts';
import type { TopPlan } from './plan.ts';

/**
 * The frozen part of a split network in ONNX Runtime, built with the extraction converter:
 * - bottom: raw uint8 images → boundary activations, flattened channels-last (pooling 'none');
 * - top: boundary activations → the cut layer, global-average pooled, with the *pretrained* top
 *   weights (what the head trains on while the whole base is frozen).
 * When the boundary is the cut (nothing unfrozen) the bottom itself pools and there is no top.
 * Seconds spent in ORT are accumulated in `seconds`.
 */
export class FrozenBase {
  seconds = 0;
  private nchw = new Float32Array(0);

  private constructor(
    readonly plan: TopPlan,
    private readonly bottom: OrtFeatureRunner,
    private readonly top: OrtFeatureRunner | undefined,
    readonly boundaryDim: number,
    readonly pooledDim: number,
  ) {}

  get hasTop(): boolean {
    return this.top !== undefined;
  }

  static async create(
    graph: KerasGraph,
    weights: WeightMap,
    plan: TopPlan,
    preprocessing: Preprocessing,
    threads: number,
  ): Promise<FrozenBase> {
    const [h, w] = preprocessing.size;
    const hasTop = plan.boundary !== plan.cut;
    const bottom = convertKerasGraph(graph, weights, {
      layer: plan.boundary,
      pooling: hasTop ? 'none' : 'avg',
      preprocessing,
    });
    const bottomRunner = await OrtFeatureRunner.create(encodeModel(bottom.model), [h, w, 3], bottom.featureDim, {
      threads,
    });
    if (!hasTop) return new FrozenBase(plan, bottomRunner, undefined, 0, bottom.featureDim);
    const top = convertKerasGraph(graph, weights, {
      layer: plan.cut,
      pooling: 'avg',
      preprocessing,
      from: plan.boundary,
    });
    const [bh, bw, bc] = plan.inShape;
    const topRunner = await OrtFeatureRunner.create(
      encodeModel(top.model),
      [bc, bh, bw],
      top.featureDim,
      { threads },
      'float32',
    );
    return new FrozenBase(plan, bottomRunner, topRunner, bottom.featureDim, top.featureDim);
  }

  /** Boundary activations [n, H·W·C] (channels-last) of n packed images; pooled features if there is no top. */
  async boundary(pixels: Uint8Array, n: number): Promise<Float32Array> {
    const t = performance.now();
    try {
      return await this.bottom.run(pixels, n);
    } finally {
      this.seconds += (performance.now() - t) / 1000;
    }
  }

  /** Pooled cut features [n, C'] from boundary activations (channels-last, as `boundary` returns them). */
  async pooled(boundary: Float32Array, n: number): Promise<Float32Array> {
    if (!this.top) return boundary.slice(0, n * this.pooledDim);
    const [h, w, c] = this.plan.inShape;
    const per = h * w * c;
    if (this.nchw.length < n * per) this.nchw = new Float32Array(n * per);
    const dst = this.nchw;
    for (let i = 0; i < n; i++) {
      const o = i * per;
      for (let p = 0; p < h * w; p++)
        for (let ch = 0; ch < c; ch++) dst[o + ch * h * w + p] = boundary[o + p * c + ch]!;
    }
    const t = performance.now();
    try {
      return await this.top.run(dst, n);
    } finally {
      this.seconds += (performance.now() - t) / 1000;
    }
  }

  async release(): Promise<void> {
    await this.bottom.release();
    await this.top?.release();
  }
}
