// Drives Keyturn with oauth4webapi (npm), an independent RFC 9449 / RFC 7523 client:
// client_credentials with HTTP Basic and with private_key_jwt, each with a DPoP proof
// (retrying once on use_dpop_nonce, as RFC 9449 §8 says), then GET /v1/validate as a
// protected resource with the bound token. Prints one JSON line of what it saw.
//
// argv: <base URL> <issuer> <key id> <key secret> <keyless key id> <PKCS#8 PEM, base64>
//       <clock skew, seconds>
import * as oauth from 'oauth4webapi'

const [base, issuer, keyId, secret, keylessId, pemB64, skewText] = process.argv.slice(2)
const skew = Number(skewText)
const insecure = { [oauth.allowInsecureRequests]: true }

const discovered = await oauth.processDiscoveryResponse(
  new URL(issuer),
  await fetch(`${base}/.well-known/oauth-authorization-server`),
)
// The metadata names the public URL; the test server answers on loopback.
const as = { ...discovered, token_endpoint: `${base}/v1/token` }

async function pkcs8(pemBase64) {
  const pem = Buffer.from(pemBase64, 'base64').toString('ascii')
  const der = Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64')
  return crypto.subtle.importKey('pkcs8', der, { name: 'ECDSA', namedCurve: 'P-256' }, false, [
    'sign',
  ])
}

async function grant(client, auth, dpop) {
  const request = () =>
    oauth.clientCredentialsGrantRequest(as, client, auth, { scope: 'read' }, { DPoP: dpop, ...insecure })
  try {
    return await oauth.processClientCredentialsResponse(as, client, await request())
  } catch (err) {
    if (!oauth.isDPoPNonceError(err)) throw err
    // The handle keeps the DPoP-Nonce of the refusal: a new proof carries it.
    return oauth.processClientCredentialsResponse(as, client, await request())
  }
}

const keyPair = await oauth.generateKeyPair('ES256')
const jwk = await crypto.subtle.exportKey('jwk', keyPair.publicKey)
const out = { jwk, algs: discovered.dpop_signing_alg_values_supported }

const basicClient = { client_id: keyId, [oauth.clockSkew]: skew }
const basicDPoP = oauth.DPoP(basicClient, keyPair)
const basic = await grant(basicClient, oauth.ClientSecretBasic(secret), basicDPoP)
out.basic = { token_type: basic.token_type, access_token: basic.access_token }

const keylessClient = { client_id: keylessId, [oauth.clockSkew]: skew }
const signer = await pkcs8(pemB64)
const keyless = await grant(
  keylessClient,
  oauth.PrivateKeyJwt(signer),
  oauth.DPoP(keylessClient, keyPair),
)
out.private_key_jwt = { token_type: keyless.token_type, access_token: keyless.access_token }

// A protected resource request through /v1/validate: oauth4webapi signs htm/htu/ath.
const validate = new URL(`${base}/v1/validate`)
const headers = new Headers({ 'X-Original-Method': 'GET', 'X-Original-URL': validate.href })
const checked = await oauth.protectedResourceRequest(
  basic.access_token, 'GET', validate, headers, null, { DPoP: basicDPoP, ...insecure },
)
out.validate = { status: checked.status, subject: checked.headers.get('x-keyturn-subject') }
console.log(JSON.stringify(out))
