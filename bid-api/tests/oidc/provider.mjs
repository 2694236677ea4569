// A real OpenID provider (the OpenID-certified `oidc-provider` library) for the bid-api's
// identity tests, started by them on a free loopback port.
//
//   node provider.mjs <port> <keys.json> [<tls-cert.pem> <tls-key.pem>]
//
// <keys.json> is {"keys": [private JWKs with kid and alg]}: the signing keys, published
// (public parts) at /jwks. The first key of an algorithm signs; restarting with another
// set is a key rotation. Clients `alice`, `bob` (scope "bid watch") and `watcher` (scope
// "watch") use the client_credentials grant; the resource indicator picks the access
// token's format: `urn:gavel:<ALG>` gives a JWT (RFC 9068) for audience `gavel` signed with
// ALG (ES256, RS256, PS256, EdDSA); `urn:other` one for audience `other`.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';
import Provider from 'oidc-provider';

const [port, keysFile, certFile, keyFile] = process.argv.slice(2);
const tls = certFile && keyFile;
const issuer = `${tls ? 'https' : 'http'}://127.0.0.1:${port}`;
const jwks = JSON.parse(readFileSync(keysFile, 'utf8'));
const algs = ['ES256', 'RS256', 'PS256', 'EdDSA'];
const servers = Object.fromEntries(algs.map((alg) => [`urn:gavel:${alg}`, {
  audience: 'gavel', scope: 'bid watch', accessTokenFormat: 'jwt', accessTokenTTL: 600, jwt: { sign: { alg } },
}]));
servers['urn:other'] = {
  audience: 'other', scope: 'bid watch', accessTokenFormat: 'jwt', accessTokenTTL: 600, jwt: { sign: { alg: 'ES256' } },
};
const client = (id, scope) => ({
  client_id: id, client_secret: `${id}-secret`, grant_types: ['client_credentials'],
  redirect_uris: [], response_types: [], scope,
  // ID tokens are never issued here, but the client must name an algorithm with a key.
  id_token_signed_response_alg: jwks.keys[0].alg,
});

const provider = new Provider(issuer, {
  jwks,
  clients: [client('alice', 'bid watch'), client('bob', 'bid watch'), client('watcher', 'watch')],
  scopes: ['bid', 'watch'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:gavel:ES256',
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx, resource) => {
        const info = servers[resource];
        if (!info) throw new Provider.errors.InvalidTarget();
        return info;
      },
    },
  },
  enabledJWA: { authorizationSigningAlgValues: algs, idTokenSigningAlgValues: algs },
});
provider.on('server_error', (_ctx, err) => console.error('server_error', err));

const listening = () => console.log(`oidc-provider listening on ${issuer}`);
if (tls) {
  createServer({ cert: readFileSync(certFile), key: readFileSync(keyFile) }, provider.callback())
    .listen(Number(port), '127.0.0.1', listening);
} else {
  provider.listen(Number(port), '127.0.0.1', listening);
}
