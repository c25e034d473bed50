// An Apollo federation gateway over running subgraphs, for the end-to-end tests.
//
//   SUBGRAPHS='topology=http://127.0.0.1:8080/graphql,catalog=http://127.0.0.1:8081/graphql' \
//   GATEWAY_PORT=4000 node tests/js/gateway.mjs
//
// Composes the supergraph once at start (IntrospectAndCompose: each subgraph's `_service { sdl }`),
// prints `ready http://127.0.0.1:PORT/` on stdout when it answers, and exits non-zero with the
// composition errors when the subgraphs do not compose. Loopback only; nothing is reported anywhere.
import { ApolloGateway, IntrospectAndCompose } from '@apollo/gateway';
import { ApolloServer } from '@apollo/server';
import {
  ApolloServerPluginLandingPageDisabled,
  ApolloServerPluginSchemaReportingDisabled,
  ApolloServerPluginUsageReportingDisabled,
} from '@apollo/server/plugin/disabled';
import { startStandaloneServer } from '@apollo/server/standalone';

function parseSubgraphs(spec) {
  const list = (spec || '').split(',').map((s) => s.trim()).filter(Boolean).map((entry) => {
    const eq = entry.indexOf('=');
    if (eq <= 0) throw new Error(`SUBGRAPHS entry ${JSON.stringify(entry)} is not name=url`);
    return { name: entry.slice(0, eq), url: entry.slice(eq + 1) };
  });
  if (list.length === 0) throw new Error('SUBGRAPHS is empty: give name=url[,name=url...]');
  return list;
}

async function main() {
  const subgraphs = parseSubgraphs(process.env.SUBGRAPHS);
  const port = Number(process.env.GATEWAY_PORT || 4000);
  const host = process.env.GATEWAY_HOST || '127.0.0.1';
  // Quiet logger: the tests read stdout for `ready`; warnings and errors go to stderr.
  const logger = {
    debug() {}, info() {},
    warn: (...a) => console.error('[gateway warn]', ...a),
    error: (...a) => console.error('[gateway error]', ...a),
  };
  const gateway = new ApolloGateway({
    supergraphSdl: new IntrospectAndCompose({ subgraphs }),
    logger,
  });
  const server = new ApolloServer({
    gateway,
    logger,
    // No landing page (it loads from a CDN) and no reporting, even if APOLLO_KEY is set.
    plugins: [
      ApolloServerPluginLandingPageDisabled(),
      ApolloServerPluginSchemaReportingDisabled(),
      ApolloServerPluginUsageReportingDisabled(),
    ],
    includeStacktraceInErrorResponses: true,
  });
  const { url } = await startStandaloneServer(server, { listen: { port, host } });
  console.log(`ready ${url}`);

  const stop = async () => {
    try { await server.stop(); } finally { process.exit(0); }
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => {
  console.error('gateway failed:', err && (err.stack || err.message || err));
  if (err && Array.isArray(err.errors)) for (const e of err.errors) console.error('  -', e.message || e);
  process.exit(1);
});
