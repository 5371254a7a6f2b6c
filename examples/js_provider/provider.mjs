// An SMS provider app in plain JavaScript (Node 18+: node:http and fetch, no packages), for messageservice
// or Bitrix24.
//
//   PORT=9300 PUBLIC_URL=http://127.0.0.1:9300 node examples/js_provider/provider.mjs
//
// Give the portal http://127.0.0.1:9300/ as the app's URL. Then:
//   - ONAPPINSTALL / ONAPPUPDATE (POST /): register the sender with the event's access token, and keep the
//     application_token and client_endpoint;
//   - HANDLER call (POST /handler): check application_token, answer 200 at once, "send" the SMS, then report
//     `sent` and `delivered` with messageservice.message.status.update;
//   - ONAPPUNINSTALL (POST /): forget the installation;
//   - GET /: the state, for people and tests.
//
// The portal POSTs form-encoded bodies with PHP-style keys (`auth[access_token]=...`); URLSearchParams reads
// them as flat keys. REST calls go as JSON to {client_endpoint}{method}, with `auth` in the body.

import http from "node:http";

const PORT = Number(process.env.PORT || 9300);
const HOST = process.env.HOST || "127.0.0.1";
const PUBLIC_URL = (process.env.PUBLIC_URL || `http://${HOST}:${PORT}`).replace(/\/+$/, "");
const CODE = process.env.PROVIDER_CODE || "js_sms";
const MAX_BODY = 1_048_576;
const REMEMBERED = 10_000; // message_ids kept to drop repeated deliveries (messageservice retries)

const installation = { applicationToken: null, clientEndpoint: null };
const seen = new Set();

function say(text) {
  const time = new Date().toTimeString().slice(0, 8);
  console.log(`${time} [js-provider] ${text}`);
}

class BitrixError extends Error {
  constructor(error, description) {
    super(`${error}: ${description}`);
    this.error = error;
  }
}

// One REST call; returns `result` or throws BitrixError with the portal's error code.
async function callMethod(clientEndpoint, accessToken, method, params = {}) {
  const url = clientEndpoint.replace(/\/*$/, "/") + method;
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ ...params, auth: accessToken }),
    redirect: "manual",
    signal: AbortSignal.timeout(15_000),
  });
  const answer = await response.json().catch(() => ({ error: "WRONG_ANSWER", error_description: `HTTP ${response.status}` }));
  if (answer.error) throw new BitrixError(answer.error, answer.error_description || "");
  return answer.result;
}

function senderParams() {
  return {
    CODE,
    TYPE: "SMS",
    HANDLER: `${PUBLIC_URL}/handler`,
    NAME: { en: "JS SMS" },
    DESCRIPTION: { en: "An example provider in plain JavaScript." },
  };
}

function tokenMatches(received) {
  const expected = installation.applicationToken;
  return typeof expected === "string" && typeof received === "string" && expected === received;
}

// --- app events ----------------------------------------------------------------------------------------------

async function onEvent(form) {
  const event = (form.get("event") || "").toUpperCase();
  const auth = {
    accessToken: form.get("auth[access_token]"),
    clientEndpoint: form.get("auth[client_endpoint]"),
    applicationToken: form.get("auth[application_token]"),
  };
  if (event === "ONAPPINSTALL" || event === "ONAPPUPDATE") {
    if (!auth.accessToken || !auth.clientEndpoint || !auth.applicationToken) {
      return [400, "auth[access_token], auth[client_endpoint] and auth[application_token] are required"];
    }
    // Registering with the event's token also proves the event genuine: only the portal mints tokens it accepts.
    const sender = senderParams();
    let verb = "added";
    try {
      try {
        await callMethod(auth.clientEndpoint, auth.accessToken, "messageservice.sender.add", sender);
      } catch (error) {
        if (!(error instanceof BitrixError) || error.error !== "ERROR_SENDER_ALREADY_INSTALLED") throw error;
        await callMethod(auth.clientEndpoint, auth.accessToken, "messageservice.sender.update", sender);
        verb = "updated";
      }
    } catch (error) {
      say(`${event}: could not register the sender: ${error.message}`);
      return [502, `sender registration failed: ${error.message}`];
    }
    installation.applicationToken = auth.applicationToken;
    installation.clientEndpoint = auth.clientEndpoint;
    say(`${event}: sender '${CODE}' ${verb}, HANDLER ${sender.HANDLER}`);
    return [200, "OK"];
  }
  if (event === "ONAPPUNINSTALL") {
    if (!tokenMatches(auth.applicationToken)) return [403, "unknown application_token"];
    installation.applicationToken = installation.clientEndpoint = null;
    say("ONAPPUNINSTALL: uninstalled; HANDLER calls are refused from now on");
    return [200, "OK"];
  }
  return [400, "unknown event"];
}

// --- HANDLER -------------------------------------------------------------------------------------------------

function onMessage(form) {
  if (!tokenMatches(form.get("auth[application_token]"))) {
    say("refused a HANDLER call with an unknown application_token");
    return [403, "unknown application_token"];
  }
  for (const field of ["message_id", "code", "message_to", "message_body"]) {
    if (!form.get(field)) return [400, `${field} is required`];
  }
  const call = {
    messageId: form.get("message_id"), // 32 hex: report with it, and drop repeats of it
    code: form.get("code"),
    to: form.get("message_to"),
    body: form.get("message_body"),
    accessToken: form.get("auth[access_token]"),
  };
  if (seen.has(call.messageId)) {
    say(`message ${call.messageId} again (a retried delivery): already sent`);
    return [200, "OK"];
  }
  seen.add(call.messageId);
  if (seen.size > REMEMBERED) seen.delete(seen.values().next().value);
  say(`message ${call.messageId} to ${call.to}: '${call.body}'`);
  // After the answer: a real provider hands the SMS to its carrier and reports `delivered` when it is.
  return [200, "OK", () => report(call)];
}

async function report(call) {
  for (const status of ["sent", "delivered"]) {
    try {
      await callMethod(installation.clientEndpoint, call.accessToken, "messageservice.message.status.update", {
        CODE: call.code,
        MESSAGE_ID: call.messageId, // the 32-hex message_id of the call, not the numeric ID
        STATUS: status,
      });
      say(`message ${call.messageId}: reported ${status}`);
    } catch (error) {
      say(`message ${call.messageId}: the portal refused ${status}: ${error.message}`);
      return;
    }
  }
}

// --- the server ----------------------------------------------------------------------------------------------

async function readForm(request) {
  let size = 0;
  const chunks = [];
  for await (const chunk of request) {
    size += chunk.length;
    if (size > MAX_BODY) return null;
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString("utf8"));
}

const server = http.createServer(async (request, response) => {
  const path = new URL(request.url, PUBLIC_URL).pathname;
  let status = 404;
  let text = "not found";
  let after = null;
  try {
    if (request.method === "GET") {
      [status, text] = [200, JSON.stringify({ installed: installation.applicationToken !== null, sender: CODE })];
    } else if (path === "/" || path === "/handler") {
      const form = await readForm(request);
      if (form === null) [status, text] = [413, "body too large"];
      else [status, text, after] = path === "/" ? await onEvent(form) : onMessage(form);
    }
  } catch (error) {
    [status, text] = [500, String(error)];
  }
  response.writeHead(status, { "Content-Type": "text/plain; charset=utf-8" });
  response.end(text);
  if (after) after();
});

server.listen(PORT, HOST, () => say(`listening on ${PUBLIC_URL}`));
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => process.exit(0));
