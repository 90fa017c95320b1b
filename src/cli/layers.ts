import { defineCommand } from './command.ts';
import { consoleLogger } from '../util/log.ts';
import { DEFAULT_MODEL } from '../backbone/registry.ts';
import { describeLayers } from '../backbone/layers.ts';

export const command = defineCommand(
  {
    name: 'layers',
    summary: 'list the layers of a model with their output shapes, to choose where to cut (--layer)',
    usage: 'convcache layers [--model NAME|DIR|URL] [--json]',
    flags: {
      model: {
        type: 'string',
        metavar: 'MODEL',
        description: 'known name, model folder, model.json, or URL',
        default: DEFAULT_MODEL,
      },
      json: { type: 'boolean', description: 'print JSON instead of a table' },
    },
  },
  async ({ flags }) => {
    const info = await describeLayers(flags.model, consoleLogger());
    if (flags.json) {
      process.stdout.write(JSON.stringify(info, null, 2) + '\n');
      return;
    }
    const w = Math.max(...info.layers.map((l) => l.name.length), 5);
    const t = Math.max(...info.layers.map((l) => l.type.length), 4);
    const lines = [
      `${info.model} (input ${info.inputShape.join('x')}); default cut: ${info.defaultLayer}${info.defaultWhy ? ` (${info.defaultWhy})` : ''}`,
      '',
      `${'layer'.padEnd(w)}  ${'type'.padEnd(t)}  output (H x W x C)   features with --pool avg / none`,
    ];
    for (const l of info.layers) {
      const mark = l.name === info.defaultLayer ? '  <- default' : '';
      const feats = l.features
        ? `${l.features.pooled ?? '-'} / ${l.features.flat}`
        : l.shape.length === 3
          ? `${l.shape[2]} / ${l.shape[0]! * l.shape[1]! * l.shape[2]!}`
          : l.shape.length
            ? String(l.shape[0])
            : '';
      lines.push(
        `${l.name.padEnd(w)}  ${l.type.padEnd(t)}  ${(l.shape.length ? l.shape.join(' x ') : '(not float / not measured)').padEnd(19)}  ${feats}${mark}`,
      );
    }
    lines.push(
      '',
      'Lower layers are more generic (better for data far from ImageNet); cut with: convcache extract --layer NAME',
    );
    process.stdout.write(lines.join('\n') + '\n');
  },
);
