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
//
// With GAVEL_TEST_PAGE_REDIRECT set (the bidder page's redirect URI), the public client
// `gavel-page` signs users in with the authorization code grant and PKCE (no secret),
// through the library's development login and consent pages (any login, any password:
// the login is the `sub`, its capitalised form the `name` claim), and gets refresh
// tokens; its resource `urn:gavel:page` gives access tokens for audience `gavel` that
// live GAVEL_TEST_PAGE_TOKEN_TTL seconds (600 by default).
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
const pageRedirect = process.env.GAVEL_TEST_PAGE_REDIRECT;
const pageTtl = Number(process.env.GAVEL_TEST_PAGE_TOKEN_TTL || 600);
servers['urn:gavel:page'] = {
  audience: 'gavel', scope: 'bid watch', accessTokenFormat: 'jwt', accessTokenTTL: pageTtl, jwt: { sign: { alg: 'ES256' } },
};
servers['urn:other'] = {
  audience: 'other', scope: 'bid watch', accessTokenFormat: 'jwt', accessTokenTTL: 600, jwt: { sign: { alg: 'ES256' } },
};
const client = (id, scope) => ({
  client_id: id, client_secret: `${id}-secret`, grant_types: ['client_credentials'],
  redirect_uris: [], response_types: [], scope,
  // ID tokens are never issued here, but the client must name an algorithm with a key.
  id_token_signed_response_alg: jwks.keys[0].alg,
});

const clients = [client('alice', 'bid watch'), client('bob', 'bid watch'), client('watcher', 'watch')];
if (pageRedirect) {
  clients.push({
    client_id: 'gavel-page', token_endpoint_auth_method: 'none', application_type: 'web',
    grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'],
    redirect_uris: [pageRedirect], scope: 'openid bid watch',
    id_token_signed_response_alg: jwks.keys[0].alg,
  });
}
const capitalised = (s) => s.charAt(0).toUpperCase() + s.slice(1);

const provider = new Provider(issuer, {
  jwks,
  clients,
  scopes: ['openid', 'bid', 'watch'],
  findAccount: (_ctx, sub) => ({ accountId: sub, claims: () => ({ sub, name: capitalised(sub) }) }),
  // The page's access tokens carry the display name, as a provider's mapper would put it.
  extraTokenClaims: (_ctx, token) => (token.accountId ? { name: capitalised(token.accountId) } : undefined),
  // A public web client gets refresh tokens without `offline_access`, as Keycloak's do.
  issueRefreshToken: (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  features: {
    devInteractions: { enabled: Boolean(pageRedirect) },
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
