import type * as TF from '@tensorflow/tfjs';
import type { Tf } from '../util/tf.ts';
import type { Act, ConvOp, ParamTensor, TopPlan } from './plan.ts';
import type { AdamState, OptimizerConfig } from './top-engine.ts';

/**
 * The trainable part of a split network in TF.js: the top conv ops of a TopPlan (BN folded, see
 * plan.ts) + the head GlobalAveragePooling2D → Dropout → Dense(softmax).
 *
 * Forward and backward passes are written out by hand instead of using TF.js autodiff: the wasm
 * backend has no kernels for Conv2DBackpropFilter or the depthwise backprops, and the transposed
 * matMuls autodiff emits leave XNNPACK's fast path. Here a 1×1 conv is a plain matMul, a depthwise
 * conv's input gradient is a depthwise conv of the (dilated, padded) output gradient with the
 * 180°-rotated kernel, its kernel gradient a sum of kh·kw strided-slice products, and a k×k conv's
 * input gradient is conv2dTranspose. Everything random (dropout masks) comes from the caller, so
 * a run is reproducible. Adam is implemented here too so its state can be checkpointed exactly.
 */

interface Saved {
  /** Op input after explicit padding (conv ops), or the op input. */
  xp?: TF.Tensor4D;
  /** Op output (after activation), for the activation mask. */
  y: TF.Tensor4D;
}

export class TopModel {
  /** [conv params …, head kernel [C, K], head bias [K]]. */
  params: TF.Tensor[];
  private m: TF.Tensor[] = [];
  private v: TF.Tensor[] = [];
  step = 0;

  constructor(
    private readonly tf: Tf,
    readonly plan: TopPlan,
    values: readonly ParamTensor[],
    readonly nClasses: number,
  ) {
    this.params = values.map((p) => tf.tensor(p.data, p.shape));
  }

  get headIndex(): number {
    return this.params.length - 2;
  }

  /** Current parameter values (fresh copies). */
  values(names: readonly string[]): ParamTensor[] {
    return this.params.map((t, i) => ({
      name: names[i]!,
      shape: [...t.shape],
      data: Float32Array.from(t.dataSync() as Float32Array),
    }));
  }

  setValues(values: readonly ParamTensor[]): void {
    const { tf } = this;
    tf.dispose(this.params);
    this.params = values.map((p) => tf.tensor(p.data, p.shape));
  }

  /** Reset the optimiser state for training parameters [from, params.length). */
  resetOptimizer(): void {
    this.tf.dispose([...this.m, ...this.v]);
    this.m = [];
    this.v = [];
    this.step = 0;
  }

  getOptimizerState(): AdamState {
    return {
      step: this.step,
      m: this.m.map((t) => Float32Array.from(t.dataSync() as Float32Array)),
      v: this.v.map((t) => Float32Array.from(t.dataSync() as Float32Array)),
    };
  }

  setOptimizerState(s: AdamState, from: number): void {
    this.resetOptimizer();
    const shapes = this.params.slice(from).map((p) => p.shape);
    this.m = s.m.map((d, i) => this.tf.tensor(d, shapes[i]!));
    this.v = s.v.map((d, i) => this.tf.tensor(d, shapes[i]!));
    this.step = s.step;
  }

  dispose(): void {
    this.tf.dispose([...this.params, ...this.m, ...this.v]);
    this.params = [];
    this.m = [];
    this.v = [];
  }

  // -------------------------------------------------------------------------------------------
  // forward

  private activation(z: TF.Tensor4D, act: Act): TF.Tensor4D {
    const { tf } = this;
    if (act.fn === 'linear') return z;
    return act.max !== undefined ? tf.clipByValue(z, 0, act.max) : tf.relu(z);
  }

  private padded(x: TF.Tensor4D, pads: [number, number, number, number]): TF.Tensor4D {
    const [t, l, b, r] = pads;
    return t || l || b || r
      ? this.tf.pad(x, [
          [0, 0],
          [t, b],
          [l, r],
          [0, 0],
        ])
      : x;
  }

  private isPointwise(op: ConvOp): boolean {
    return (
      op.type === 'Conv2D' &&
      op.kernel[0] === 1 &&
      op.kernel[1] === 1 &&
      op.strides[0] === 1 &&
      op.strides[1] === 1 &&
      op.pads.every((p) => p === 0)
    );
  }

  private convForward(op: ConvOp, xp: TF.Tensor4D): TF.Tensor4D {
    const { tf } = this;
    const W = this.params[op.param]!;
    const b = this.params[op.param + 1]!;
    const [n, h, w, cin] = xp.shape;
    let z: TF.Tensor4D;
    if (this.isPointwise(op)) {
      const cout = W.shape[3]!;
      z = tf.reshape(tf.add(tf.matMul(tf.reshape(xp, [n * h * w, cin]), tf.reshape(W, [cin, cout])), b), [
        n,
        h,
        w,
        cout,
      ]);
    } else if (op.type === 'DepthwiseConv2D') {
      z = tf.add(tf.depthwiseConv2d(xp, W as TF.Tensor4D, op.strides, 'valid'), b);
    } else {
      z = tf.add(tf.conv2d(xp, W as TF.Tensor4D, op.strides, 'valid'), b);
    }
    return this.activation(z, op.act);
  }

  /** Top conv ops on boundary activations x [N, H, W, C] → cut feature map; `saved` collects what backward needs. */
  private topForward(x: TF.Tensor4D, saved?: Saved[]): TF.Tensor4D {
    const { tf } = this;
    let cur = x;
    for (const op of this.plan.ops) {
      if (op.kind === 'conv') {
        const xp = this.padded(cur, op.pads);
        cur = this.convForward(op, xp);
        saved?.push({ xp, y: cur });
      } else if (op.kind === 'affine') {
        cur = this.activation(tf.add(tf.mul(cur, tf.tensor1d(op.scale)), tf.tensor1d(op.shift)), op.act);
        saved?.push({ y: cur });
      } else {
        cur = this.activation(cur, op.act);
        saved?.push({ y: cur });
      }
    }
    return cur;
  }

  private headLogits(pooled: TF.Tensor2D, mask?: TF.Tensor2D): TF.Tensor2D {
    const { tf } = this;
    const h = mask ? tf.mul(pooled, mask) : pooled;
    return tf.add(tf.matMul(h, this.params[this.headIndex] as TF.Tensor2D), this.params[this.headIndex + 1]!);
  }

  /** Class probabilities for boundary activations x [N, H, W, C] (inference: no dropout). */
  predict(x: TF.Tensor4D): TF.Tensor2D {
    const { tf } = this;
    return tf.tidy(() => tf.softmax(this.headLogits(tf.mean(this.topForward(x), [1, 2]) as TF.Tensor2D)));
  }

  /** The cut feature map (e.g. conv_pw_13_relu) for boundary activations x. */
  features(x: TF.Tensor4D): TF.Tensor4D {
    return this.tf.tidy(() => this.topForward(x));
  }

  /** Class probabilities from pooled features [N, C] (the head alone). */
  predictPooled(pooled: TF.Tensor2D): TF.Tensor2D {
    const { tf } = this;
    return tf.tidy(() => tf.softmax(this.headLogits(pooled)));
  }

  // -------------------------------------------------------------------------------------------
  // backward + update

  private actMask(y: TF.Tensor4D, act: Act): TF.Tensor4D | undefined {
    const { tf } = this;
    if (act.fn === 'linear') return undefined;
    const pos = tf.step(y);
    return act.max !== undefined ? (tf.mul(pos, tf.step(tf.sub(act.max, y))) as TF.Tensor4D) : pos;
  }

  /** Sum over all axes but the last (a ones-row matMul: reductions over leading axes are slow on wasm). */
  private sumRows(x: TF.Tensor): TF.Tensor1D {
    const { tf } = this;
    const c = x.shape[x.shape.length - 1]!;
    const rows = x.size / c;
    return tf.reshape(tf.matMul(tf.ones([1, rows]), tf.reshape(x, [rows, c])), [c]);
  }

  /** Spread an output gradient of a stride-s conv back onto the stride-1 grid (zeros in between). */
  private dilate(d: TF.Tensor4D, s: [number, number]): TF.Tensor4D {
    const { tf } = this;
    let out = d;
    const [n, h, w, c] = d.shape;
    if (s[1] > 1) {
      const z = tf.zerosLike(out);
      out = tf.reshape(tf.stack([out, ...Array.from({ length: s[1] - 1 }, () => z)], 3), [n, h, w * s[1], c]);
      out = tf.slice(out, [0, 0, 0, 0], [n, h, (w - 1) * s[1] + 1, c]);
    }
    if (s[0] > 1) {
      const w2 = out.shape[2];
      const z = tf.zerosLike(out);
      out = tf.reshape(tf.stack([out, ...Array.from({ length: s[0] - 1 }, () => z)], 2), [n, h * s[0], w2, c]);
      out = tf.slice(out, [0, 0, 0, 0], [n, (h - 1) * s[0] + 1, w2, c]);
    }
    return out;
  }

  private tap(xp: TF.Tensor4D, ky: number, kx: number, op: ConvOp, ho: number, wo: number): TF.Tensor4D {
    const [n, , , c] = xp.shape;
    const [sh, sw] = op.strides;
    return this.tf.stridedSlice(
      xp,
      [0, ky, kx, 0],
      [n, ky + sh * (ho - 1) + 1, kx + sw * (wo - 1) + 1, c],
      [1, sh, sw, 1],
    ) as TF.Tensor4D;
  }

  /** Gradients of one conv op: returns [dW, db] and, if wanted, d(op input). */
  private convBackward(
    op: ConvOp,
    s: Saved,
    dz: TF.Tensor4D,
    needInput: boolean,
  ): { dW: TF.Tensor; db: TF.Tensor; dx?: TF.Tensor4D } {
    const { tf } = this;
    const xp = s.xp!;
    const W = this.params[op.param]!;
    const [n, hp, wp, cin] = xp.shape;
    const [, ho, wo, cout] = dz.shape;
    const [kh, kw] = op.kernel;
    const db = this.sumRows(dz);
    let dW: TF.Tensor;
    let dxp: TF.Tensor4D | undefined;
    if (this.isPointwise(op)) {
      const x2 = tf.reshape(xp, [n * hp * wp, cin]);
      const d2 = tf.reshape(dz, [n * ho * wo, cout]);
      dW = tf.reshape(tf.matMul(tf.transpose(x2), d2), W.shape);
      if (needInput) dxp = tf.reshape(tf.matMul(d2, tf.transpose(tf.reshape(W, [cin, cout]))), [n, hp, wp, cin]);
    } else if (op.type === 'DepthwiseConv2D') {
      // dW[ky,kx,c] = Σ_{b,i,j} xp[b, ky+s·i, kx+s·j, c]·dz[b,i,j,c]: a depthwise conv of xp (batch moved
      // into channels) with dz as a dilated filter, then a sum over the batch. Strided slices per tap
      // would be ~25× slower on wasm.
      const xt = tf.reshape(tf.transpose(xp, [1, 2, 0, 3]), [1, hp, wp, n * cin]);
      const ft = tf.reshape(tf.transpose(dz, [1, 2, 0, 3]), [ho, wo, n * cin, 1]);
      const full = tf.depthwiseConv2d(xt as TF.Tensor4D, ft as TF.Tensor4D, 1, 'valid', 'NHWC', op.strides);
      const taps = tf.reshape(tf.slice(full, [0, 0, 0, 0], [1, kh, kw, n * cin]), [kh * kw, n, cin]);
      dW = tf.reshape(tf.matMul(tf.ones([kh * kw, 1, n]), taps), W.shape);
      if (needInput) {
        const dd = this.dilate(dz, op.strides);
        const extraH = hp - (dd.shape[1] + kh - 1);
        const extraW = wp - (dd.shape[2] + kw - 1);
        const padded = tf.pad(dd, [
          [0, 0],
          [kh - 1, kh - 1 + extraH],
          [kw - 1, kw - 1 + extraW],
          [0, 0],
        ]);
        dxp = tf.depthwiseConv2d(padded, tf.reverse(W, [0, 1]) as TF.Tensor4D, 1, 'valid');
      }
    } else {
      const taps: TF.Tensor4D[] = [];
      for (let ky = 0; ky < kh; ky++) for (let kx = 0; kx < kw; kx++) taps.push(this.tap(xp, ky, kx, op, ho, wo));
      const patches = tf.reshape(tf.concat(taps, 3), [n * ho * wo, kh * kw * cin]);
      dW = tf.reshape(tf.matMul(tf.transpose(patches), tf.reshape(dz, [n * ho * wo, cout])), W.shape);
      if (needInput) dxp = tf.conv2dTranspose(dz, W as TF.Tensor4D, [n, hp, wp, cin], op.strides, 'valid');
    }
    let dx: TF.Tensor4D | undefined;
    if (dxp) {
      const [t, l] = op.pads;
      const [h, w] = op.inShape;
      dx = t || l || hp !== h || wp !== w ? tf.slice(dxp, [0, t, l, 0], [n, h, w, cin]) : dxp;
    }
    return { dW, db, dx };
  }

  /**
   * Loss, number correct and gradients for a batch (call inside tf.tidy). `x` = boundary activations
   * [B, H, W, C] (trainTop) or pooled features [B, C] (head only); `labels` int class ids; `mask` the
   * dropout mask [B, C] (already scaled by 1/keep), or undefined. Gradients of parameters that do
   * not train are left undefined.
   */
  private lossAndGrads(
    x: TF.Tensor,
    labels: Int32Array,
    mask: Float32Array | undefined,
    trainTop: boolean,
    targets?: Float32Array,
  ): { loss: TF.Scalar; correct: TF.Scalar; grads: TF.Tensor[] } {
    const { tf } = this;
    const B = x.shape[0]!;
    const saved: Saved[] = [];
    const fmap = trainTop ? this.topForward(x as TF.Tensor4D, saved) : undefined;
    const pooled = (fmap ? tf.mean(fmap, [1, 2]) : x) as TF.Tensor2D;
    const C = pooled.shape[1];
    const m = mask ? tf.tensor2d(mask, [B, C]) : undefined;
    const h = m ? tf.mul(pooled, m) : pooled;
    const logits = tf.add(tf.matMul(h, this.params[this.headIndex] as TF.Tensor2D), this.params[this.headIndex + 1]!);
    const onehot = targets
      ? tf.tensor2d(targets, [B, this.nClasses])
      : tf.oneHot(tf.tensor1d(labels, 'int32'), this.nClasses);
    const logp = tf.logSoftmax(logits);
    const loss = tf.neg(tf.mean(tf.sum(tf.mul(onehot, logp), 1)));
    const pred = tf.argMax(logits, 1);
    const correct = tf.sum(tf.cast(tf.equal(pred, tf.tensor1d(labels, 'int32')), 'float32'));
    const dlogits = tf.div(tf.sub(tf.exp(logp), onehot), B);
    const grads: TF.Tensor[] = new Array(this.params.length);
    grads[this.headIndex] = tf.matMul(tf.transpose(h), dlogits);
    grads[this.headIndex + 1] = tf.sum(dlogits, 0);
    if (fmap) {
      let dpooled: TF.Tensor2D = tf.matMul(dlogits, tf.transpose(this.params[this.headIndex]!));
      if (m) dpooled = tf.mul(dpooled, m);
      const [, fh, fw, fc] = fmap.shape;
      // Broadcast over H×W (tf.tile is ~10× slower than a broadcasting add on wasm).
      let d: TF.Tensor4D = tf.add(tf.zeros([B, fh, fw, fc]), tf.reshape(tf.div(dpooled, fh * fw), [B, 1, 1, fc]));
      const firstConv = this.plan.ops.findIndex((o) => o.kind === 'conv');
      for (let i = this.plan.ops.length - 1; firstConv >= 0 && i >= firstConv; i--) {
        const op = this.plan.ops[i]!;
        const s = saved[i]!;
        const am = this.actMask(s.y, op.act);
        const dz: TF.Tensor4D = am ? tf.mul(d, am) : d;
        if (op.kind === 'conv') {
          const r = this.convBackward(op, s, dz, i > firstConv);
          grads[op.param] = r.dW;
          grads[op.param + 1] = r.db;
          if (r.dx) d = r.dx;
        } else if (op.kind === 'affine') d = tf.mul(dz, tf.tensor1d(op.scale));
        else d = dz;
      }
    }
    return { loss: loss as TF.Scalar, correct: correct as TF.Scalar, grads };
  }

  /** Loss and gradients as plain arrays (for gradient checks); undefined for frozen parameters. */
  gradients(
    x: TF.Tensor,
    labels: Int32Array,
    mask: Float32Array | undefined,
    trainTop: boolean,
  ): { loss: number; grads: (Float32Array | undefined)[] } {
    const { tf } = this;
    return tf.tidy(() => {
      const r = this.lossAndGrads(x, labels, mask, trainTop);
      return {
        loss: (r.loss.dataSync() as Float32Array)[0]!,
        grads: Array.from(r.grads, (g) => (g ? Float32Array.from(g.dataSync() as Float32Array) : undefined)),
      };
    });
  }

  /** One optimisation step on a batch (see lossAndGrads); returns the batch's mean loss and number correct. */
  trainStep(
    x: TF.Tensor,
    labels: Int32Array,
    mask: Float32Array | undefined,
    opt: OptimizerConfig,
    trainTop: boolean,
    targets?: Float32Array,
  ): { loss: number; correct: number } {
    const { tf } = this;
    const from = trainTop ? 0 : this.headIndex;
    const result = tf.tidy(() => {
      const { loss, correct, grads } = this.lossAndGrads(x, labels, mask, trainTop, targets);
      const updated = this.applyOptimizer(grads, from, opt);
      return { loss, correct, ...updated };
    });
    // Replace state outside tidy: dispose old tensors, keep the new ones.
    for (let i = from; i < this.params.length; i++) {
      this.params[i]!.dispose();
      this.params[i] = result.params[i - from]!;
    }
    this.tf.dispose([...this.m, ...this.v]);
    this.m = result.m;
    this.v = result.v;
    this.step++;
    const loss = (result.loss.dataSync() as Float32Array)[0]!;
    const correct = (result.correct.dataSync() as Float32Array)[0]!;
    tf.dispose([result.loss, result.correct]);
    return { loss, correct };
  }

  private applyOptimizer(
    grads: TF.Tensor[],
    from: number,
    opt: OptimizerConfig,
  ): { params: TF.Tensor[]; m: TF.Tensor[]; v: TF.Tensor[] } {
    const { tf } = this;
    const t = this.step + 1;
    const params: TF.Tensor[] = [];
    const ms: TF.Tensor[] = [];
    const vs: TF.Tensor[] = [];
    for (let i = from; i < this.params.length; i++) {
      const g = grads[i]!;
      const p = this.params[i]!;
      const j = i - from;
      if (opt.kind === 'adam') {
        const b1 = opt.beta1 ?? 0.9,
          b2 = opt.beta2 ?? 0.999,
          eps = opt.epsilon ?? 1e-7;
        const m0 = this.m[j] ?? tf.zerosLike(p);
        const v0 = this.v[j] ?? tf.zerosLike(p);
        const m = tf.add(tf.mul(m0, b1), tf.mul(g, 1 - b1));
        const v = tf.add(tf.mul(v0, b2), tf.mul(tf.square(g), 1 - b2));
        // Keras/TF Adam: lr_t = lr·√(1−β2^t)/(1−β1^t); ε added to √v.
        const lrT = (opt.lr * Math.sqrt(1 - b2 ** t)) / (1 - b1 ** t);
        params.push(tf.sub(p, tf.mul(tf.div(m, tf.add(tf.sqrt(v), eps)), lrT)));
        ms.push(m);
        vs.push(v);
      } else {
        const rho = opt.rho ?? 0.9,
          eps = opt.epsilon ?? 1e-7;
        const v0 = this.v[j] ?? tf.zerosLike(p);
        const v = tf.add(tf.mul(v0, rho), tf.mul(tf.square(g), 1 - rho));
        params.push(tf.sub(p, tf.mul(tf.div(g, tf.add(tf.sqrt(v), eps)), opt.lr)));
        vs.push(v);
      }
    }
    return { params, m: ms, v: vs };
  }
}
