// node-oidc-provider for bench/bench_peers.py: client_credentials, JWT access tokens
// (resource indicators, accessTokenFormat 'jwt') signed ES256, introspection, in-memory
// adapter (the default). Its JWT access tokens cannot be introspected ("Structured JWT
// Tokens cannot be introspected"), so a second resource, OPAQUE, gets opaque access
// tokens: the ones the introspection run sends. Usage: node oidc_provider.mjs PORT CLIENT_ID CLIENT_SECRET
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const [port, clientId, clientSecret] = process.argv.slice(2);
const resource = 'urn:keyturn:bench';
const OPAQUE = 'urn:keyturn:opaque';
const key = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });

const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'ES256',
  }],
  jwks: { keys: [{ ...key, kid: 'bench', alg: 'ES256', use: 'sig' }] },
  scopes: ['read'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, indicator) => (indicator === OPAQUE
        ? { scope: 'read', audience: OPAQUE, accessTokenTTL: 300, accessTokenFormat: 'opaque' }
        : {
          scope: 'read',
          audience: resource,
          accessTokenTTL: 300,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'ES256' } },
        }),
    },
  },
});
provider.listen(Number(port), '127.0.0.1', () => console.log(`listening on ${port}`));
