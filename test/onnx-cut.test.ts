import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { encodeModel, GraphBuilder, type OnnxAttr } from '../src/onnx/write.ts';
import { DataType } from '../src/onnx/schema.ts';
import { defaultOnnxCut } from '../src/backbone/onnx-cut.ts';
import { prepareBackbone } from '../src/backbone/backbone.ts';
import { describeLayers } from '../src/backbone/layers.ts';
import { readOnnxDataConfig, METADATA_KEY } from '../src/backbone/onnx-config.ts';
import { silentLogger } from '../src/util/log.ts';
import { UserError } from '../src/util/errors.ts';
import { removeDir, tempDir } from './helpers.ts';

/** Small graphs built the way exporters write them: NCHW float input 'x', named trunk tensors. */
class Net {
  b = new GraphBuilder();
  private seed = 1;
  private rand(n: number): Float32Array {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      this.seed = (this.seed * 16807) % 2147483647;
      a[i] = (this.seed / 2147483647 - 0.5) * 0.5;
    }
    return a;
  }
  conv(x: string, cin: number, cout: number, k = 1, stride = 1, out?: string, pad = Math.floor(k / 2)): string {
    const w = this.b.constFloat('w', [cout, cin, k, k], this.rand(cout * cin * k * k));
    const attrs: OnnxAttr[] = [
      { name: 'kernel_shape', kind: 'ints', value: [k, k] },
      { name: 'strides', kind: 'ints', value: [stride, stride] },
      { name: 'pads', kind: 'ints', value: Array(4).fill(pad) },
    ];
    return this.b.node('Conv', [x, w], 'conv', attrs, out);
  }
  op(type: string, inputs: string[], attrs: OnnxAttr[] = [], out?: string): string {
    return this.b.node(type, inputs, type.toLowerCase(), attrs, out);
  }
  gemm(x: string, cin: number, cout: number, out = 'logits'): string {
    const w = this.b.constFloat('fc_w', [cout, cin], this.rand(cout * cin));
    const bias = this.b.constFloat('fc_b', [cout], this.rand(cout));
    return this.op('Gemm', [x, w, bias], [{ name: 'transB', kind: 'int', value: 1 }], out);
  }
  /** Squeeze-and-excitation: pool → reduce → expand → sigmoid → gate the trunk. */
  se(x: string, c: number, pool: 'gap' | 'mean' = 'gap'): string {
    const s =
      pool === 'gap'
        ? this.op('GlobalAveragePool', [x])
        : this.op(
            'ReduceMean',
            [x],
            [
              { name: 'axes', kind: 'ints', value: [2, 3] },
              { name: 'keepdims', kind: 'int', value: 1 },
            ],
          );
    const r = this.op('Relu', [this.conv(s, c, Math.max(1, c / 2))]);
    const g = this.op('Sigmoid', [this.conv(r, Math.max(1, c / 2), c)]);
    return this.op('Mul', [x, g]);
  }
  model(
    outputs: { name: string; shape: (number | string)[] }[],
    opts: { input?: (number | string)[]; opset?: number; metadata?: Record<string, string> } = {},
  ): Uint8Array {
    return encodeModel({
      producer: 'test',
      opset: opts.opset ?? 13,
      metadata: opts.metadata,
      graph: {
        name: 'g',
        nodes: this.b.nodes,
        initializers: this.b.inits,
        inputs: [{ name: 'x', dataType: DataType.FLOAT, shape: opts.input ?? ['N', 3, 16, 16] }],
        outputs: outputs.map((o) => ({ name: o.name, dataType: DataType.FLOAT, shape: o.shape })),
      },
    });
  }
}

/** EfficientNet/MobileNetV3-style: SE blocks (global pools inside) before the head's own pool. */
function seNet(): Uint8Array {
  const n = new Net();
  let x = n.op('Relu', [n.conv('x', 3, 8, 3, 2)]);
  x = n.se(x, 8);
  x = n.op('Relu', [n.conv(x, 8, 12, 3, 2)]);
  x = n.se(x, 12);
  const trunk = n.op('Relu', [n.conv(x, 12, 20)], [], 'trunk_out');
  const pooled = n.op('GlobalAveragePool', [trunk]);
  n.gemm(n.op('Flatten', [pooled], [{ name: 'axis', kind: 'int', value: 1 }]), 20, 5);
  return n.model([{ name: 'logits', shape: ['N', 5] }]);
}

test('default cut skips squeeze-and-excitation pools: the input of the pool before the classifier', () => {
  const cut = defaultOnnxCut(seNet());
  assert.ok(cut);
  assert.equal(cut.tensor, 'trunk_out');
  assert.equal(cut.pooling, 'avg');
  // Truncated after an SE block (no pooling of its own): the SE pool gates the trunk, so it is never the cut.
  const n = new Net();
  n.se(n.op('Relu', [n.conv('x', 3, 8, 3, 2)]), 8);
  const out = n.b.nodes[n.b.nodes.length - 1]!.outputs[0]!;
  assert.equal(defaultOnnxCut(n.model([{ name: out, shape: ['N', 8, 8, 8] }])), undefined);
});

test('default cut: ReduceMean heads (attribute axes and opset-18 axes input), with ReduceMean SE blocks', () => {
  for (const opset18 of [false, true]) {
    const n = new Net();
    let x = n.op('Relu', [n.conv('x', 3, 8, 3, 2)]);
    if (!opset18) x = n.se(x, 8, 'mean');
    const trunk = n.op('Relu', [n.conv(x, 8, 16)], [], 'features_map');
    const pooled = opset18
      ? n.op('ReduceMean', [trunk, n.b.constInt64('axes', [-2, -1])], [{ name: 'keepdims', kind: 'int', value: 0 }])
      : n.op(
          'ReduceMean',
          [trunk],
          [
            { name: 'axes', kind: 'ints', value: [2, 3] },
            { name: 'keepdims', kind: 'int', value: 0 },
          ],
        );
    n.gemm(pooled, 16, 4);
    const cut = defaultOnnxCut(n.model([{ name: 'logits', shape: ['N', 4] }], { opset: opset18 ? 18 : 13 }));
    assert.deepEqual([cut?.tensor, cut?.pooling], ['features_map', 'avg'], `opset ${opset18 ? 18 : 13}`);
  }
});

test('default cut: AveragePool → Flatten → Gemm heads, global max pools, channels-last ReduceMean', () => {
  {
    const n = new Net();
    const trunk = n.op('Relu', [n.conv('x', 3, 6, 3, 4)], [], 'last_relu'); // 4x4 map
    const avg = n.op(
      'AveragePool',
      [n.op('MaxPool', [trunk], [{ name: 'kernel_shape', kind: 'ints', value: [1, 1] }])],
      [{ name: 'kernel_shape', kind: 'ints', value: [4, 4] }],
    );
    n.gemm(n.op('Flatten', [avg]), 6, 3);
    const cut = defaultOnnxCut(n.model([{ name: 'logits', shape: ['N', 3] }]));
    assert.equal(cut?.tensor.startsWith('maxpool'), true, `the AveragePool's input, got ${cut?.tensor}`);
  }
  {
    const n = new Net();
    const trunk = n.op('Relu', [n.conv('x', 3, 6, 3, 2)], [], 'act');
    n.gemm(n.op('Flatten', [n.op('GlobalMaxPool', [trunk])]), 6, 3);
    const cut = defaultOnnxCut(n.model([{ name: 'logits', shape: ['N', 3] }]));
    assert.deepEqual([cut?.tensor, cut?.pooling], ['act', 'max']);
  }
  {
    const n = new Net();
    const nhwc = n.op(
      'Transpose',
      [n.op('Relu', [n.conv('x', 3, 6, 3, 2)])],
      [{ name: 'perm', kind: 'ints', value: [0, 2, 3, 1] }],
    );
    const pooled = n.op(
      'ReduceMean',
      [nhwc],
      [
        { name: 'axes', kind: 'ints', value: [1, 2] },
        { name: 'keepdims', kind: 'int', value: 0 },
      ],
      'pooled_nhwc',
    );
    n.gemm(pooled, 6, 3);
    const cut = defaultOnnxCut(n.model([{ name: 'logits', shape: ['N', 3] }]));
    assert.deepEqual([cut?.tensor, cut?.pooling], ['pooled_nhwc', 'none']);
  }
});

function scalarIndex(n: Net, v: number): string {
  n.b.inits.push({
    name: 'cls_idx',
    dataType: DataType.INT64,
    dims: [],
    raw: new Uint8Array(new BigInt64Array([BigInt(v)]).buffer),
  });
  return 'cls_idx';
}

/** ViT-style: patchify, tokens [N, T, D], a residual MLP block, layer-norm-like centring, then a token pooling. */
function tokenNet(pool: 'cls' | 'mean', headless = false): Uint8Array {
  const n = new Net();
  const patches = n.conv('x', 3, 6, 4, 4, undefined, 0); // [N, 6, H/4, W/4]
  const tokens = n.op(
    'Transpose',
    [n.op('Reshape', [patches, n.b.constInt64('shape', [0, 6, -1])])],
    [{ name: 'perm', kind: 'ints', value: [0, 2, 1] }],
  ); // [N, T, 6]
  const mlp = n.op('MatMul', [
    tokens,
    n.b.constFloat(
      'w_mlp',
      [6, 6],
      new Float32Array(36).map((_, i) => (i % 7 === 0 ? 0.5 : 0.01)),
    ),
  ]);
  const block = n.op('Add', [tokens, mlp]);
  const mean = n.op(
    'ReduceMean',
    [block],
    [
      { name: 'axes', kind: 'ints', value: [-1] },
      { name: 'keepdims', kind: 'int', value: 1 },
    ],
  );
  const normed = n.op('Sub', [block, mean], [], 'last_hidden_state');
  const pooled =
    pool === 'cls'
      ? n.op('Gather', [normed, scalarIndex(n, 0)], [{ name: 'axis', kind: 'int', value: 1 }], 'cls_token') // x[:, 0]
      : n.op(
          'ReduceMean',
          [normed],
          [
            { name: 'axes', kind: 'ints', value: [1] },
            { name: 'keepdims', kind: 'int', value: 0 },
          ],
          'mean_tokens',
        );
  if (headless)
    return n.model([
      { name: 'last_hidden_state', shape: ['N', 16, 6] },
      { name: pooled, shape: ['N', 'D'] },
    ]);
  n.gemm(pooled, 6, 3);
  return n.model([{ name: 'logits', shape: ['N', 3] }]);
}

test('default cut for transformers: the class token or mean-pooled tokens entering the classifier, pooling none', () => {
  const cls = defaultOnnxCut(tokenNet('cls'));
  assert.equal(cls?.pooling, 'none');
  assert.equal(cls!.tensor, 'cls_token', 'the classifier input (the class token)');
  assert.deepEqual(
    [defaultOnnxCut(tokenNet('mean'))?.tensor, defaultOnnxCut(tokenNet('mean'))?.pooling],
    ['mean_tokens', 'none'],
  );
  // Headless export (last_hidden_state + pooled output, like Dinov2Model): the class-token pick.
  assert.deepEqual(
    [defaultOnnxCut(tokenNet('cls', true))?.tensor, defaultOnnxCut(tokenNet('cls', true))?.pooling],
    ['cls_token', 'none'],
  );
  // A network with no pooling and no classifier: nothing to guess.
  const n = new Net();
  n.op('Relu', [n.conv('x', 3, 4)], [], 'y');
  assert.equal(defaultOnnxCut(n.model([{ name: 'y', shape: ['N', 4, 16, 16] }])), undefined);
});

test('extract and layers on ONNX graphs: default cut width, measured shapes, preprocessing from sidecar / metadata, flags override', async () => {
  const dir = tempDir('onnxcut');
  try {
    const cache = join(dir, 'models');
    const se = join(dir, 'se.onnx');
    writeFileSync(se, seNet());
    // No input size in a sidecar: the graph's declared 16x16 is used.
    const prepared = await prepareBackbone({ model: se, log: silentLogger, modelCacheDir: cache });
    assert.deepEqual(
      [prepared.config.layer, prepared.config.pooling, prepared.config.featureDim],
      ['trunk_out', 'avg', 20],
    );
    assert.deepEqual(prepared.config.preprocessing.size, [16, 16]);

    const listing = await describeLayers(se, silentLogger);
    assert.equal(listing.defaultLayer, 'trunk_out');
    assert.match(listing.defaultWhy ?? '', /last spatial pooling/);
    const trunk = listing.layers.find((l) => l.name === 'trunk_out')!;
    assert.deepEqual(trunk.shape, [4, 4, 20], 'H x W x C after two stride-2 convs');
    assert.deepEqual(trunk.features, { pooled: 20, flat: 320 });
    assert.deepEqual(listing.layers.find((l) => l.name === 'logits')!.features, { pooled: undefined, flat: 5 });

    // Preprocessing in the model's metadata_props, overridden by a sidecar, overridden by flags.
    const meta = join(dir, 'tok', 'vit.onnx');
    mkdirSync(join(dir, 'tok'));
    const json = {
      input_size: [3, 32, 32],
      resize: 'squash',
      interpolation: 'bilinear',
      mean: [0.5, 0.5, 0.5],
      std: [0.25, 0.25, 0.25],
    };
    writeFileSync(meta, withMetadata(tokenNet('mean'), { [METADATA_KEY]: JSON.stringify(json) }));
    const fromMeta = readOnnxDataConfig(meta, withMetadata(tokenNet('mean'), { [METADATA_KEY]: JSON.stringify(json) }));
    assert.deepEqual(fromMeta.preprocessing, {
      size: [32, 32],
      resize: 'squash',
      kernel: 'linear',
      mean: [0.5, 0.5, 0.5],
      std: [0.25, 0.25, 0.25],
    });
    const a = await prepareBackbone({ model: meta, log: silentLogger, modelCacheDir: cache });
    assert.deepEqual(
      [a.config.preprocessing.size, a.config.preprocessing.std, a.config.pooling, a.config.featureDim],
      [[32, 32], [0.25, 0.25, 0.25], 'none', 6],
    );
    writeFileSync(
      `${meta}.json`,
      JSON.stringify({ std: [0.5, 0.5, 0.5], feature_node: 'last_hidden_state', pooling: 'none' }),
    );
    const b = await prepareBackbone({ model: meta, log: silentLogger, modelCacheDir: cache });
    assert.deepEqual(
      [b.config.preprocessing.size, b.config.preprocessing.std, b.config.layer, b.config.featureDim],
      [[32, 32], [0.5, 0.5, 0.5], 'last_hidden_state', 64 * 6],
    );
    const c = await prepareBackbone({
      model: meta,
      log: silentLogger,
      modelCacheDir: cache,
      preprocessing: { size: [16, 16] },
      layer: 'mean_tokens',
    });
    assert.deepEqual([c.config.preprocessing.size, c.config.layer, c.config.featureDim], [[16, 16], 'mean_tokens', 6]);
    writeFileSync(`${meta}.json`, JSON.stringify({ crop_pct: 2 }));
    await assert.rejects(
      prepareBackbone({ model: meta, log: silentLogger, modelCacheDir: cache }),
      (e: unknown) => e instanceof UserError && /invalid "crop_pct"/.test(e.message),
    );

    // A timm config.json / HF preprocessor_config.json next to the file are read too.
    const hub = join(dir, 'hub', 'onnx');
    mkdirSync(hub, { recursive: true });
    writeFileSync(join(hub, 'model.onnx'), seNet());
    writeFileSync(
      join(dir, 'hub', 'preprocessor_config.json'),
      JSON.stringify({
        crop_size: { height: 24, width: 24 },
        do_center_crop: true,
        size: { shortest_edge: 32 },
        resample: 3,
        image_mean: [0.1, 0.2, 0.3],
        image_std: [0.5, 0.5, 0.5],
      }),
    );
    assert.deepEqual(readOnnxDataConfig(join(hub, 'model.onnx'), seNet()).preprocessing, {
      size: [24, 24],
      resize: 'center-crop',
      cropPct: 0.75,
      kernel: 'cubic',
      mean: [0.1, 0.2, 0.3],
      std: [0.5, 0.5, 0.5],
    });
    writeFileSync(
      join(hub, 'config.json'),
      JSON.stringify({
        architecture: 'x',
        pretrained_cfg: {
          input_size: [3, 20, 20],
          interpolation: 'bilinear',
          crop_pct: 0.9,
          crop_mode: 'center',
          mean: [0, 0, 0],
          std: [1, 1, 1],
        },
      }),
    );
    assert.deepEqual(
      readOnnxDataConfig(join(hub, 'model.onnx'), seNet()).preprocessing,
      { size: [20, 20], resize: 'center-crop', cropPct: 0.9, kernel: 'linear', mean: [0, 0, 0], std: [1, 1, 1] },
      "the model's own folder wins",
    );
    // ConvNextImageProcessor's form (crop_pct + shortest_edge, no crop_size).
    const cnx = join(dir, 'cnx');
    mkdirSync(cnx);
    writeFileSync(
      join(cnx, 'preprocessor_config.json'),
      JSON.stringify({
        crop_pct: 0.875,
        do_normalize: true,
        do_rescale: true,
        do_resize: true,
        image_mean: [0.485, 0.456, 0.406],
        image_std: [0.229, 0.224, 0.225],
        resample: 3,
        size: { shortest_edge: 224 },
      }),
    );
    assert.deepEqual(readOnnxDataConfig(join(cnx, 'model.onnx'), seNet()).preprocessing, {
      size: [224, 224],
      resize: 'center-crop',
      cropPct: 0.875,
      kernel: 'cubic',
      mean: [0.485, 0.456, 0.406],
      std: [0.229, 0.224, 0.225],
    });
  } finally {
    removeDir(dir);
  }
});

/** Re-encode with metadata_props: the same graph bytes plus ModelProto field 14 entries. */
function withMetadata(model: Uint8Array, meta: Record<string, string>): Uint8Array {
  const enc = new TextEncoder();
  const varint = (v: number) => {
    const b: number[] = [];
    while (v >= 0x80) {
      b.push((v & 0x7f) | 0x80);
      v >>>= 7;
    }
    b.push(v);
    return b;
  };
  const ld = (no: number, d: number[] | Uint8Array) => [...varint((no << 3) | 2), ...varint(d.length), ...d];
  const extra = Object.entries(meta).flatMap(([k, v]) => ld(14, [...ld(1, enc.encode(k)), ...ld(2, enc.encode(v))]));
  return new Uint8Array([...model, ...extra]);
}
