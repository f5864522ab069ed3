#!/usr/bin/env node
// The OpenID provider of ssh-tpm's end-to-end tests: node's certified `oidc-provider`, configured
// for one kind of client (a native app with a loopback redirect, PKCE and no secret), with our
// own login and consent pages so that passwords are checked and accounts can be disabled.
//
//   node provider.mjs --port P --accounts ACCOUNTS.json --clients CLIENTS.json
//
// Port 0 picks a free port. The issuer is http://127.0.0.1:PORT; once it accepts connections
// the provider prints `listening on ISSUER` on stdout. The accounts file is read on every
// request (see README.md for its format), the clients file once at start.

import { generateKeyPair, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { parseArgs, promisify } from 'node:util';

const DEFAULT_ID_TOKEN_TTL = 600;
const REDIRECT_URI = 'http://127.0.0.1/callback';
const FORM_LIMIT = 64 * 1024;

function fail(message) {
  process.stderr.write(`provider.mjs: ${message}\n`);
  process.exit(2);
}

function readJson(path, what) {
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new Error(`cannot read the ${what} file ${path}: ${err.message}`);
  }
}

// ------------------------------------------------------------------------------------------
// Accounts: { "alice": { "password": "…", "email": "…", "groups": […], "disabled": false,
//                        "id_token_ttl": 600 } }, re-read on every use.

function loadAccounts(path) {
  const accounts = readJson(path, 'accounts');
  if (accounts === null || typeof accounts !== 'object' || Array.isArray(accounts)) {
    throw new Error(`the accounts file ${path} must hold an object keyed by user name`);
  }
  return accounts;
}

function findAccountEntry(path, name) {
  if (typeof name !== 'string') return undefined;
  const accounts = loadAccounts(path);
  return Object.hasOwn(accounts, name) ? accounts[name] : undefined;
}

function idTokenTtl(path, name) {
  const ttl = findAccountEntry(path, name)?.id_token_ttl;
  return Number.isInteger(ttl) && ttl > 0 ? ttl : DEFAULT_ID_TOKEN_TTL;
}

// ------------------------------------------------------------------------------------------
// Clients: [ "ssh-tpm", … ] or [ { "client_id": "ssh-tpm", "redirect_uris": […] }, … ]

function loadClients(path) {
  const list = readJson(path, 'clients');
  if (!Array.isArray(list) || list.length === 0) {
    throw new Error(`the clients file ${path} must hold a non-empty array`);
  }
  return list.map((entry) => {
    const given = typeof entry === 'string' ? { client_id: entry } : entry;
    return {
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code'],
      response_types: ['code'],
      redirect_uris: [REDIRECT_URI],
      id_token_signed_response_alg: 'RS256',
      ...given,
    };
  });
}

// ------------------------------------------------------------------------------------------
// The provider

function configuration(accountsPath, clients, privateKey) {
  const signingKey = { ...privateKey.export({ format: 'jwk' }), alg: 'RS256', use: 'sig' };

  return {
    clients,
    jwks: { keys: [signingKey] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
    },
    conformIdTokenClaims: false,
    responseTypes: ['code'],
    pkce: { methods: ['S256'], required: () => true },
    features: {
      devInteractions: { enabled: false },
    },
    interactions: {
      url: (ctx, interaction) => `/interaction/${interaction.uid}`,
    },
    ttl: {
      AuthorizationCode: 60,
      AccessToken: 600,
      Grant: 3600,
      Interaction: 600,
      Session: 3600,
      IdToken: (ctx, token) => idTokenTtl(accountsPath, token.available?.sub),
    },
    async findAccount(ctx, sub) {
      const entry = findAccountEntry(accountsPath, sub);
      if (!entry || entry.disabled) return undefined;
      return {
        accountId: sub,
        async claims() {
          // Read again: a test may have changed the groups since the login.
          const now = findAccountEntry(accountsPath, sub) ?? entry;
          return {
            sub,
            email: now.email ?? `${sub}@example.com`,
            email_verified: true,
            groups: Array.isArray(now.groups) ? now.groups : [],
          };
        },
      };
    },
    async renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = page('Error', `<p class="error">${escape(out.error)}: ${escape(out.error_description ?? '')}</p>`);
    },
  };
}

// ------------------------------------------------------------------------------------------
// Login and consent pages

function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title, body) {
  return `<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>${escape(title)}</title></head>`
    + `<body><h1>${escape(title)}</h1>\n${body}\n</body></html>\n`;
}

function loginPage(uid, error) {
  const message = error ? `<p class="error">${escape(error)}</p>\n` : '';
  return page('Sign in', `${message}<form method="post" action="/interaction/${uid}/login">
<input name="username" autocomplete="username">
<input name="password" type="password" autocomplete="current-password">
<button type="submit">Sign in</button>
</form>`);
}

function consentPage(uid, clientId, scopes) {
  return page('Authorize', `<p>${escape(clientId)} asks for: ${escape(scopes.join(' '))}</p>
<form method="post" action="/interaction/${uid}/confirm">
<button type="submit">Allow</button>
</form>`);
}

function send(res, status, html) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(html);
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > FORM_LIMIT) throw new Error('form too large');
  }
  return new URLSearchParams(body);
}

async function interaction(provider, accountsPath, req, res, path) {
  const details = await provider.interactionDetails(req, res);
  const { uid, prompt, params } = details;

  if (req.method === 'GET' && path === `/interaction/${uid}`) {
    if (prompt.name === 'login') return send(res, 200, loginPage(uid));
    if (prompt.name === 'consent') {
      const scopes = String(params.scope ?? '').split(' ').filter(Boolean);
      return send(res, 200, consentPage(uid, params.client_id, scopes));
    }
    return send(res, 400, page('Error', `<p class="error">unknown prompt ${escape(prompt.name)}</p>`));
  }

  if (req.method === 'POST' && path === `/interaction/${uid}/login` && prompt.name === 'login') {
    const form = await readForm(req);
    const username = form.get('username') ?? '';
    const entry = findAccountEntry(accountsPath, username);
    if (!entry || typeof entry.password !== 'string' || entry.password !== form.get('password')) {
      return send(res, 401, loginPage(uid, 'invalid user name or password'));
    }
    if (entry.disabled) {
      return send(res, 403, loginPage(uid, `account ${username} is disabled`));
    }
    const result = { login: { accountId: username } };
    return provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
  }

  if (req.method === 'POST' && path === `/interaction/${uid}/confirm` && prompt.name === 'consent') {
    await readForm(req);
    const accountId = details.session?.accountId;
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId, clientId: params.client_id });
    const missing = prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    const result = { consent: details.grantId ? {} : { grantId } };
    return provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
  }

  return send(res, 404, page('Not found', '<p class="error">no such interaction step</p>'));
}

// ------------------------------------------------------------------------------------------
// Start

async function main() {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: '0' },
      accounts: { type: 'string' },
      clients: { type: 'string' },
    },
  });
  if (!values.accounts || !values.clients) {
    fail('usage: provider.mjs --port P --accounts ACCOUNTS.json --clients CLIENTS.json');
  }
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`bad --port ${values.port}`);

  loadAccounts(values.accounts);
  const clients = loadClients(values.clients);

  // The signing key is made on the thread pool while the provider's modules load.
  const keyPair = promisify(generateKeyPair)('rsa', { modulusLength: 2048 });
  const { default: Provider } = await import('oidc-provider');

  // Bind first, so that port 0 can pick a port and the issuer can name it.
  let handler = (req, res) => send(res, 503, page('Starting', ''));
  const server = createServer((req, res) => handler(req, res));
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  const issuer = `http://127.0.0.1:${server.address().port}`;

  const { privateKey } = await keyPair;
  const provider = new Provider(issuer, configuration(values.accounts, clients, privateKey));
  provider.on('server_error', (ctx, err) => process.stderr.write(`server error: ${err.stack}\n`));
  const oidc = provider.callback();

  handler = async (req, res) => {
    const path = new URL(req.url, issuer).pathname;
    if (!path.startsWith('/interaction/')) return oidc(req, res);
    try {
      return await interaction(provider, values.accounts, req, res, path);
    } catch (err) {
      process.stderr.write(`interaction ${req.method} ${path}: ${err.message}\n`);
      return send(res, 400, page('Error', `<p class="error">${escape(err.message)}</p>`));
    }
  };

  process.on('SIGTERM', () => process.exit(0));
  process.stdout.write(`listening on ${issuer}\n`);
}

main().catch((err) => fail(err.message));
