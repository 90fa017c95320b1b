/** Number formatting shared by logs, reports and the CLI. */

/** A fraction as a percentage: 0.9871 → '98.71%'; null/undefined → 'n/a'. */
export function pct(a: number | null | undefined, digits = 2): string {
  return a === null || a === undefined ? 'n/a' : `${(a * 100).toFixed(digits)}%`;
}
