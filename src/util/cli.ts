import { formatHelp, parseArgs, type CommandSpec, type ParsedArgs } from './args.ts';
import { isUserError } from './errors.ts';

/**
 * Run a CLI command: parse flags, print --help, and turn UserErrors into one line on stderr
 * with exit code 2. Unexpected errors print their stack (they are bugs) and exit 1.
 */
export async function runCommand(spec: CommandSpec, main: (args: ParsedArgs) => Promise<void>): Promise<void> {
  try {
    const args = parseArgs(process.argv.slice(2), spec);
    if (args.help) {
      process.stdout.write(formatHelp(spec) + '\n');
      return;
    }
    await main(args);
  } catch (e) {
    if (isUserError(e)) {
      process.stderr.write(`${spec.name}: error: ${e.message}\n`);
      process.exitCode = 2;
      return;
    }
    throw e;
  }
}
