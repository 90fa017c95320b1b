import { join } from 'node:path';
import type { WeightMap } from '../backbone/convert.ts';
import type { KerasGraph } from '../backbone/keras-graph.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import type { ParamTensor, TopPlan } from './plan.ts';
import { unfoldTopParams } from './plan.ts';

export const EXPORT_POOL = 'ft_global_average_pooling2d';
export const EXPORT_DROPOUT = 'ft_dropout';
export const EXPORT_DENSE = 'ft_predictions';

export interface ExportOptions {
  /** The pretrained model.json (parsed). */
  modelJson: any;
  graph: KerasGraph;
  weights: WeightMap;
  plan: TopPlan;
  /** Trained parameters: [folded top params …, head kernel, head bias]. */
  params: readonly ParamTensor[];
  dropout: number;
}

/** Layers the cut depends on (the conv base, include_top=False). */
function baseLayers(graph: KerasGraph, cut: string): Set<string> {
  const byName = new Map(graph.layers.map((l) => [l.name, l]));
  const needed = new Set<string>();
  const stack = [cut];
  while (stack.length) {
    const n = stack.pop()!;
    if (needed.has(n)) continue;
    needed.add(n);
    stack.push(...byName.get(n)!.inbound);
  }
  return needed;
}

function layerOfWeight(name: string): string {
  const clean = name.endsWith(':0') ? name.slice(0, -2) : name;
  return clean.slice(0, clean.lastIndexOf('/'));
}

/**
 * Write the fine-tuned network as a TF.js layers model (model.json + weights.bin) in `dir`: the
 * pretrained conv base up to the cut (frozen layers marked trainable: false, BN layers with their
 * original moving statistics, the top blocks with their trained, unfolded weights) followed by
 * GlobalAveragePooling2D → Dropout → Dense(softmax). Loadable with tf.loadLayersModel and
 * convertible by convertKerasGraph (cut at EXPORT_DENSE). Returns the output layer name.
 */
export function exportFinetunedModel(dir: string, o: ExportOptions): string {
  const { plan, graph } = o;
  const keep = baseLayers(graph, plan.cut);
  const trainable = new Set(plan.layers);
  const topo = structuredClone(o.modelJson.modelTopology);
  const mc = topo.model_config ?? topo;
  if (mc.class_name !== 'Model' && mc.class_name !== 'Functional')
    throw new Error(`export: unsupported model class ${mc.class_name}`);
  const keras2 = (mc.config.layers as any[]).every(
    (l) => Array.isArray(l.inbound_nodes) && (l.inbound_nodes.length === 0 || Array.isArray(l.inbound_nodes[0])),
  );
  if (!keras2) throw new Error('export: only Keras 2 style inbound_nodes are supported');
  const layers = (mc.config.layers as any[]).filter((l) => keep.has(l.config?.name ?? l.name));
  for (const l of layers) {
    const name = l.config?.name ?? l.name;
    if (l.class_name !== 'InputLayer') l.config.trainable = trainable.has(name);
  }
  const head = o.params[o.params.length - 2]!;
  const [C, K] = head.shape as [number, number];
  const inbound = (n: string): any[] => [[[n, 0, 0, {}]]];
  layers.push(
    {
      class_name: 'GlobalAveragePooling2D',
      name: EXPORT_POOL,
      inbound_nodes: inbound(plan.cut),
      config: { name: EXPORT_POOL, trainable: true, data_format: 'channels_last' },
    },
    {
      class_name: 'Dropout',
      name: EXPORT_DROPOUT,
      inbound_nodes: inbound(EXPORT_POOL),
      config: { name: EXPORT_DROPOUT, trainable: true, rate: o.dropout, noise_shape: null, seed: null },
    },
    {
      class_name: 'Dense',
      name: EXPORT_DENSE,
      inbound_nodes: inbound(EXPORT_DROPOUT),
      config: {
        name: EXPORT_DENSE,
        trainable: true,
        units: K,
        activation: 'softmax',
        use_bias: true,
        kernel_initializer: {
          class_name: 'VarianceScaling',
          config: { scale: 1, mode: 'fan_avg', distribution: 'uniform', seed: null },
        },
        bias_initializer: { class_name: 'Zeros', config: {} },
        kernel_regularizer: null,
        bias_regularizer: null,
        activity_regularizer: null,
        kernel_constraint: null,
        bias_constraint: null,
      },
    },
  );
  mc.config.layers = layers;
  mc.config.name = `${mc.config.name ?? 'model'}_finetuned`;
  mc.config.output_layers = [[EXPORT_DENSE, 0, 0]];

  const replaced = unfoldTopParams(plan, graph, o.weights, o.params.slice(0, -2));
  const specs: { name: string; shape: number[]; dtype: 'float32' }[] = [];
  const parts: Uint8Array[] = [];
  const add = (name: string, shape: number[], data: Float32Array): void => {
    specs.push({ name, shape, dtype: 'float32' });
    const copy = Float32Array.from(data);
    parts.push(new Uint8Array(copy.buffer));
  };
  for (const [name, w] of o.weights) {
    if (!keep.has(layerOfWeight(name))) continue;
    const clean = name.endsWith(':0') ? name.slice(0, -2) : name;
    const r = replaced.get(clean);
    add(clean, r?.shape ?? w.shape, r?.data ?? w.data);
  }
  for (const key of replaced.keys())
    if (!specs.some((s) => s.name === key))
      throw new Error(`export: trained weight ${key} has no pretrained counterpart`);
  add(`${EXPORT_DENSE}/kernel`, [C, K], head.data);
  add(`${EXPORT_DENSE}/bias`, [K], o.params[o.params.length - 1]!.data);
  writeFileAtomic(join(dir, 'weights.bin'), parts);
  const modelJson = {
    modelTopology: topo,
    format: 'layers-model',
    generatedBy: 'convcache finetune',
    convertedBy: null,
    weightsManifest: [{ paths: ['weights.bin'], weights: specs }],
  };
  writeFileAtomic(join(dir, 'model.json'), JSON.stringify(modelJson));
  return EXPORT_DENSE;
}
