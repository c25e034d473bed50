// Bundles src/service-topology.js and its npm dependencies into one ES module, dist/service-topology.js,
// which the server serves at /widget/service-topology.js. Run by docker/dev/install-node.sh (make install).
import { build } from 'esbuild';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
await build({
  entryPoints: [join(here, 'src', 'service-topology.js')],
  outfile: join(here, 'dist', 'service-topology.js'),
  bundle: true,
  format: 'esm',
  target: ['es2020'],
  minify: true,
  sourcemap: false,
  legalComments: 'none',
  logLevel: 'warning',
});
