import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** Total bytes of a file, or of every file under a directory. */
export function pathBytes(path: string): number {
  const st = statSync(path);
  if (!st.isDirectory()) return st.size;
  return readdirSync(path).reduce((s, f) => s + pathBytes(join(path, f)), 0);
}
