// Generates signing keys for provider.mjs: `node keys.mjs <out.json> kid:ALG ...` writes
// {"keys": [private JWKs]} (the provider's `jwks`) and {"pem": {kid: PKCS#8 PEM}} so
// that the tests can also sign tokens of their own with a key the provider publishes.
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';

const [out, ...specs] = process.argv.slice(2);
const keys = [];
const pem = {};
for (const spec of specs) {
  const [kid, alg] = spec.split(':');
  const pair = alg === 'EdDSA' ? generateKeyPairSync('ed25519')
    : alg === 'ES256' ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
      : generateKeyPairSync('rsa', { modulusLength: 2048 });
  keys.push({ ...pair.privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' });
  pem[kid] = pair.privateKey.export({ format: 'pem', type: 'pkcs8' });
}
writeFileSync(out, JSON.stringify({ keys, pem }));
