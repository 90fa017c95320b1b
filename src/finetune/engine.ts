import { initTf, type Tf } from '../util/tf.ts';
import { OrtTop } from './ort-top.ts';
import type { ParamTensor, TopPlan } from './plan.ts';
import { TopModel } from './top.ts';
import type { AdamState, EngineName, OptimizerConfig, TopEngine } from './top-engine.ts';

export { ENGINES, parseEngine, type EngineName, type TopEngine } from './top-engine.ts';

class TfjsEngine implements TopEngine {
  readonly name = 'tfjs' as const;
  constructor(
    private readonly tf: Tf,
    private readonly model: TopModel,
  ) {}
  get headIndex(): number {
    return this.model.headIndex;
  }
  get nClasses(): number {
    return this.model.nClasses;
  }
  values(names: readonly string[]): ParamTensor[] {
    return this.model.values(names);
  }
  setValues(values: readonly ParamTensor[]): void {
    this.model.setValues(values);
  }
  resetOptimizer(): void {
    this.model.resetOptimizer();
  }
  getOptimizerState(): AdamState {
    return this.model.getOptimizerState();
  }
  setOptimizerState(s: AdamState, from: number): void {
    this.model.setOptimizerState(s, from);
  }

  private input(x: Float32Array, n: number, pooled: boolean) {
    const [h, w, c] = this.model.plan.inShape;
    return pooled
      ? this.tf.tensor2d(x.subarray(0, n * this.model.plan.outShape[2]), [n, this.model.plan.outShape[2]])
      : this.tf.tensor4d(x.subarray(0, n * h * w * c), [n, h, w, c]);
  }

  async trainStep(
    x: Float32Array,
    n: number,
    labels: Int32Array,
    mask: Float32Array | undefined,
    opt: OptimizerConfig,
    trainTop: boolean,
    targets?: Float32Array,
  ): Promise<{ loss: number; correct: number }> {
    const xt = this.input(x, n, !trainTop);
    try {
      return this.model.trainStep(
        xt,
        labels.subarray(0, n),
        mask?.subarray(0, n * this.model.plan.outShape[2]),
        opt,
        trainTop,
        targets?.subarray(0, n * this.model.nClasses),
      );
    } finally {
      xt.dispose();
    }
  }

  async predict(x: Float32Array, n: number, pooled: boolean): Promise<Float32Array> {
    const xt = this.input(x, n, pooled);
    const p = pooled ? this.model.predictPooled(xt as never) : this.model.predict(xt as never);
    const out = Float32Array.from(p.dataSync() as Float32Array);
    this.tf.dispose([xt, p]);
    return out;
  }

  async dispose(): Promise<void> {
    this.model.dispose();
  }
}

/** TF.js is only loaded for the TF.js engine. */
export async function createTopEngine(
  name: EngineName,
  plan: TopPlan,
  initial: readonly ParamTensor[],
  nClasses: number,
  opts: { threads: number },
): Promise<TopEngine> {
  if (name === 'ort') return new OrtTop(plan, initial, nClasses, opts.threads);
  const tf = await initTf();
  return new TfjsEngine(tf, new TopModel(tf, plan, initial, nClasses));
}
