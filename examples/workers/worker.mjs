// @ts-check
// A jobserver worker in Node with plain fetch: it leases jobs of external tasks over HTTP,
// runs them, and reports their results, in batches. Declare the tasks on the server:
//   jobserver serve --external-task double=numbers --external-task delay=numbers
//   JOBSERVER_URL=http://127.0.0.1:8000 JOBSERVER_QUEUES=numbers node worker.mjs
// Types: npx openapi-typescript $JOBSERVER_URL/openapi.json -o jobserver.d.ts (the tests
// check this file against them with tsc --checkJs).
/** @typedef {import("./jobserver.js").components["schemas"]} Schemas */
/** @typedef {Schemas["Job"]} Job */
/** @typedef {{ job_id: number, lease_token: string }} Leased */

const BASE = process.env.JOBSERVER_URL ?? "http://127.0.0.1:8000";
const TOKEN = process.env.JOBSERVER_TOKEN; // a --worker-token, if the server has tokens
const QUEUES = (process.env.JOBSERVER_QUEUES ?? "external").split(",");
const BATCH = Number(process.env.JOBSERVER_BATCH ?? 64); // jobs a lease call takes
const LOOPS = Number(process.env.JOBSERVER_LOOPS ?? 2); // batches in flight at once
const LEASE_S = Number(process.env.JOBSERVER_LEASE_S ?? 30); // renewed every third of it

/** What this worker runs, by task name: (args, kwargs, signal) => result (JSON).
 * @type {Record<string, (args: unknown[], kwargs: Record<string, unknown>, signal: AbortSignal) => unknown>} */
const handlers = {
  double: (args) => Number(args[0]) * 2,
  echo: (args) => args,
  delay: ([ms, value]) => new Promise((done) => setTimeout(done, Number(ms), value)),
  explode: () => {
    throw new Error("boom");
  },
};

/** @param {string} path @param {unknown} body @returns {Promise<any>} */
async function post(path, body) {
  /** @type {Record<string, string>} */
  const headers = { "Content-Type": "application/json" };
  if (TOKEN) headers.Authorization = `Bearer ${TOKEN}`;
  const res = await fetch(BASE + path, { method: "POST", headers, body: JSON.stringify(body) });
  if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
  return res.json();
}

/** Leases held now, to renew and to stop: job id -> its lease and how to cancel its run. */
const held = new Map(/** @type {[number, { lease: Leased, abort: AbortController }][]} */ ([]));
let stopping = false;

/** @param {Job} job @param {string} token */
async function run(job, token) {
  const lease = { job_id: job.id, lease_token: token };
  const abort = new AbortController();
  held.set(job.id, { lease, abort });
  try {
    const handler = handlers[job.task];
    if (!handler) throw new Error(`this worker has no task ${job.task}`);
    const result = await handler(job.args, job.kwargs, abort.signal);
    return { ok: true, item: { ...lease, result: result ?? null } };
  } catch (err) {
    const e = err instanceof Error ? err : new Error(String(err));
    if (abort.signal.aborted) return { ok: null, item: lease }; // cancelled: give it back
    const failure = { ...lease, type: e.name, message: e.message || e.name };
    return { ok: false, item: e.stack ? { ...failure, traceback: e.stack } : failure };
  } // (still held, and renewed, until its report is in)
}

/** Lease a batch, run it, report it: until stopped. */
async function loop() {
  while (!stopping) {
    /** @type {Schemas["Leases"]} */
    let got;
    try {
      got = await post("/leases", { queues: QUEUES, limit: BATCH, lease_s: LEASE_S, wait_s: 5 });
    } catch (err) {
      console.error(String(err));
      await new Promise((r) => setTimeout(r, 1000)); // the server is away: try again
      continue;
    }
    const ran = await Promise.all(got.leases.map((l) => run(l.job, l.lease_token)));
    const done = ran.filter((r) => r.ok === true).map((r) => r.item);
    const failed = ran.filter((r) => r.ok === false).map((r) => r.item);
    const given = ran.filter((r) => r.ok === null).map((r) => r.item);
    try {
      await Promise.all([
        done.length && post("/leases/complete", { items: done }),
        failed.length && post("/leases/fail", { items: failed }),
        given.length && post("/leases/release", { items: given }),
      ]);
    } catch (err) {
      console.error(String(err)); // not reported: the leases run out and the jobs run again
    }
    for (const r of ran) held.delete(r.item.job_id);
  }
}

/** Keep the leases of running jobs; stop the ones lost or asked to cancel. */
async function renew() {
  const items = [...held.values()].map((h) => h.lease);
  if (items.length === 0) return;
  /** @type {Schemas["LeasesRenewed"]} */
  const got = await post("/leases/renew", { items, lease_s: LEASE_S });
  for (const id of [...got.lost, ...got.cancel_requested]) held.get(id)?.abort.abort();
}

const renewing = setInterval(() => renew().catch((e) => console.error(String(e))), (LEASE_S / 3) * 1000);
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => (stopping = true));
await Promise.all(Array.from({ length: LOOPS }, loop));
clearInterval(renewing);
