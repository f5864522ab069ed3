#!/usr/bin/env node
// The "browser" of ssh-tpm's end-to-end tests: follows an authorization URL the way a browser
// would (cookies, redirects, forms), signs in as LOGIN_USER with LOGIN_PASSWORD on the test
// provider's login page, allows the consent page, and finally delivers the loopback redirect
// (http://127.0.0.1:PORT/callback?code=…&state=…) to the client that is waiting for it.
//
//   BROWSER=/path/to/login.mjs ssh-tpm-cert …      (the client runs `$BROWSER URL`)
//
// Exit status 0 once the client's callback answered 2xx; otherwise 1 and a one-line reason on
// stderr (and in the file LOGIN_RESULT_FILE names, when set, so a test can read it even when
// the client swallows the browser's stderr).

import { appendFileSync } from 'node:fs';

const MAX_STEPS = 20;
const TIMEOUT_MS = 15000;

class Refused extends Error {}

function finish(status, line) {
  if (process.env.LOGIN_RESULT_FILE) {
    appendFileSync(process.env.LOGIN_RESULT_FILE, `${line}\n`);
  }
  if (status !== 0) process.stderr.write(`login.mjs: ${line}\n`);
  process.exit(status);
}

// ------------------------------------------------------------------------------------------
// Cookies: enough of RFC 6265 for one host: name, path, expiry.

class CookieJar {
  constructor() { this.cookies = new Map(); }

  store(url, response) {
    for (const header of response.headers.getSetCookie()) {
      const [pair, ...attributes] = header.split(';').map((part) => part.trim());
      const eq = pair.indexOf('=');
      if (eq <= 0) continue;
      const name = pair.slice(0, eq);
      const value = pair.slice(eq + 1);
      let path = url.pathname.replace(/\/[^/]*$/, '') || '/';
      let expired = false;
      for (const attribute of attributes) {
        const [key, ...rest] = attribute.split('=');
        const arg = rest.join('=');
        switch (key.toLowerCase()) {
          case 'path': path = arg || '/'; break;
          case 'max-age': expired ||= Number(arg) <= 0; break;
          case 'expires': expired ||= Date.parse(arg) <= Date.now(); break;
          default: break;
        }
      }
      const key = `${url.host} ${path} ${name}`;
      if (expired) this.cookies.delete(key);
      else this.cookies.set(key, { host: url.host, path, name, value });
    }
  }

  header(url) {
    const matches = [...this.cookies.values()].filter((c) => c.host === url.host
      && (url.pathname === c.path || url.pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`)));
    return matches.map((c) => `${c.name}=${c.value}`).join('; ');
  }
}

// ------------------------------------------------------------------------------------------
// Pages

function decodeEntities(text) {
  return text
    .replace(/&#(\d+);/g, (_, code) => String.fromCharCode(Number(code)))
    .replace(/&quot;/g, '"').replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');
}

function attribute(tag, name) {
  const match = tag.match(new RegExp(`\\s${name}\\s*=\\s*("([^"]*)"|'([^']*)'|([^\\s>]+))`, 'i'));
  return match ? decodeEntities(match[2] ?? match[3] ?? match[4]) : undefined;
}

// The first form of a page: its method, action and fields with their preset values.
function firstForm(html) {
  const form = html.match(/<form\b[^>]*>([\s\S]*?)<\/form>/i);
  if (!form) return undefined;
  const open = form[0].match(/<form\b[^>]*>/i)[0];
  const fields = [];
  for (const input of form[1].matchAll(/<(input|button)\b[^>]*>/gi)) {
    const name = attribute(input[0], 'name');
    if (name) fields.push([name, attribute(input[0], 'value') ?? '']);
  }
  return {
    method: (attribute(open, 'method') ?? 'get').toUpperCase(),
    action: attribute(open, 'action') ?? '',
    fields,
  };
}

// What a page says went wrong, in one line: its error paragraph, or its text.
function pageReason(html) {
  const error = html.match(/<p class="error">([\s\S]*?)<\/p>/i);
  const text = error ? error[1] : html.replace(/<[^>]*>/g, ' ');
  return decodeEntities(text).replace(/\s+/g, ' ').trim().slice(0, 300);
}

// ------------------------------------------------------------------------------------------
// The walk

async function request(jar, url, options = {}) {
  const headers = { 'user-agent': 'ssh-tpm-test-browser', ...options.headers };
  const cookie = jar.header(url);
  if (cookie) headers.cookie = cookie;
  const response = await fetch(url, {
    ...options,
    headers,
    redirect: 'manual',
    signal: AbortSignal.timeout(TIMEOUT_MS),
  });
  jar.store(url, response);
  return response;
}

function isCallback(url, redirectUri) {
  return redirectUri && url.origin === redirectUri.origin && url.pathname === redirectUri.pathname;
}

async function deliver(url) {
  // A browser sends the provider's answer to the client whatever it says.
  const response = await fetch(url, { redirect: 'manual', signal: AbortSignal.timeout(TIMEOUT_MS) });
  await response.arrayBuffer();
  const error = url.searchParams.get('error');
  if (error) {
    const description = url.searchParams.get('error_description') ?? '';
    throw new Refused(`the provider answered ${error}: ${description}`.trim());
  }
  if (!url.searchParams.get('code')) throw new Refused('the provider redirected without a code');
  if (response.status < 200 || response.status > 299) {
    throw new Refused(`the client's callback ${url.origin}${url.pathname} answered ${response.status}`);
  }
}

function fill(form, user, password) {
  const body = new URLSearchParams();
  for (const [name, value] of form.fields) {
    if (name === 'username' || name === 'login') body.set(name, user);
    else if (name === 'password') body.set(name, password);
    else body.set(name, value);
  }
  return body;
}

async function login(start, user, password) {
  const redirectParam = start.searchParams.get('redirect_uri');
  const redirectUri = redirectParam ? new URL(redirectParam) : undefined;
  const jar = new CookieJar();
  let url = start;
  let options = {};

  for (let step = 0; step < MAX_STEPS; step += 1) {
    if (isCallback(url, redirectUri)) return deliver(url);

    const response = await request(jar, url, options);
    options = {};
    const location = response.headers.get('location');
    if (response.status >= 300 && response.status < 400 && location) {
      await response.arrayBuffer();
      url = new URL(location, url);
      continue;
    }

    const html = await response.text();
    if (response.status !== 200) {
      throw new Refused(`${url.pathname} answered ${response.status}: ${pageReason(html)}`);
    }
    const form = firstForm(html);
    if (!form) throw new Refused(`${url.pathname} has no form to submit: ${pageReason(html)}`);
    const body = fill(form, user, password);
    const target = new URL(form.action || url.href, url);
    if (form.method === 'POST') {
      options = {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: body.toString(),
      };
    } else {
      target.search = body.toString();
    }
    url = target;
  }
  throw new Refused(`no callback after ${MAX_STEPS} pages`);
}

async function main() {
  const [address] = process.argv.slice(2);
  if (!address) finish(2, 'usage: login.mjs AUTHORIZATION_URL (with LOGIN_USER and LOGIN_PASSWORD set)');
  const user = process.env.LOGIN_USER;
  const password = process.env.LOGIN_PASSWORD;
  if (!user || password === undefined) finish(2, 'LOGIN_USER and LOGIN_PASSWORD must be set');

  let start;
  try {
    start = new URL(address);
  } catch {
    finish(2, `not a URL: ${address}`);
  }
  try {
    await login(start, user, password);
  } catch (err) {
    const reason = err instanceof Refused ? err.message : `cannot log in: ${err.cause?.message ?? err.message}`;
    finish(1, reason);
  }
  finish(0, 'ok');
}

main();
