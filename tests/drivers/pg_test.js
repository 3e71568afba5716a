// node-postgres (pg) through pgmux: named prepared queries ({name, text, values}), the same
// names on every client with different SQL on odd and even clients, several clients at once.
//
// Connects with the libpq environment (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE); writes
// to the empty table drv(client int, seq int, v text). DRIVER_CLIENTS and DRIVER_ROUNDS size
// the run; NODE_PATH must reach the pg module (target/drivers/node/node_modules). Exits
// non-zero naming the first mismatch or error.
'use strict';

let pg;
try {
  pg = require('pg');
} catch (e) {
  console.error(`pg_test: ${e.message.split('\n')[0]}: run scripts/drivers-setup.sh and set NODE_PATH=target/drivers/node/node_modules`);
  process.exit(2);
}

const CLIENTS = parseInt(process.env.DRIVER_CLIENTS || '20', 10);
const ROUNDS = parseInt(process.env.DRIVER_ROUNDS || '20', 10);

class Mismatch extends Error {}

function check(what, got, want) {
  const [g, w] = [JSON.stringify(got), JSON.stringify(want)];
  if (g !== w) throw new Mismatch(`${what}: got ${g}, want ${w}`);
}

async function expectError(what, sqlstate, promise) {
  let err = null;
  try {
    await promise;
  } catch (e) {
    err = e;
  }
  if (err === null) throw new Mismatch(`${what}: want SQLSTATE ${sqlstate}, got success`);
  if (err.code !== sqlstate) throw new Mismatch(`${what}: want SQLSTATE ${sqlstate}, got ${err.code}: ${err.message}`);
}

async function client(i) {
  const c = new pg.Client({ connectionTimeoutMillis: 10000, query_timeout: 30000 });
  await c.connect();
  try {
    const even = i % 2 === 0;
    const calcText = even ? `SELECT $1::int * 1000 + ${i} AS r` : `SELECT $1::text || ':${i}' AS r`;
    const calcWant = (n) => (even ? n * 1000 + i : `${n}:${i}`);
    const calc = async (n) => (await c.query({ name: 'calc', text: calcText, values: [n] })).rows[0].r;
    const insert = (seq, v) =>
      c.query({ name: 'insert', text: 'INSERT INTO drv (client, seq, v) VALUES ($1, $2, $3)', values: [i, seq, v] });
    const count = async () => {
      const res = await c.query({
        name: 'count',
        text: 'SELECT count(*)::int AS n, coalesce(sum(seq), 0)::int AS s FROM drv WHERE client = $1',
        values: [i],
      });
      return [res.rows[0].n, res.rows[0].s];
    };
    const divide = async (n) => (await c.query({ name: 'divide', text: 'SELECT 10 / $1::int AS q', values: [n] })).rows[0].q;

    for (let r = 0; r < ROUNDS; r++) {
      const tag = `client ${i} round ${r}`;
      check(`${tag}: calc`, await calc(r), calcWant(r));
      await insert(r, `c${i}r${r}`);
      const want = [r + 1, (r * (r + 1)) / 2];
      check(`${tag}: count`, await count(), want);
      check(`${tag}: divide`, await divide(5), 2);

      if (r % 4 === 1) {
        await c.query('BEGIN');
        await insert(1000 + r, 'rolled back');
        check(`${tag}: count inside the transaction`, await count(), [want[0] + 1, want[1] + 1000 + r]);
        await c.query('ROLLBACK');
        check(`${tag}: count after rollback`, await count(), want);
      }

      if (r % 4 === 3) {
        await c.query('BEGIN');
        await insert(2000 + r, 'lost');
        await expectError(`${tag}: 10 / 0`, '22012', divide(0));
        await expectError(`${tag}: after the error`, '25P02', calc(r));
        await c.query('ROLLBACK');
        check(`${tag}: calc after the failed transaction`, await calc(r), calcWant(r));
        check(`${tag}: count after the failed transaction`, await count(), want);
      }
    }
  } finally {
    await c.end();
  }
}

async function main() {
  const t0 = Date.now();
  const results = await Promise.allSettled([...Array(CLIENTS).keys()].map(client));
  const failures = results
    .map((res, i) => (res.status === 'rejected' ? `client ${i}: ${res.reason.constructor.name}: ${res.reason.message}` : null))
    .filter((f) => f !== null);
  if (failures.length > 0) {
    console.error(`pg_test: ${failures.length} of ${CLIENTS} clients failed:`);
    for (const f of failures) console.error(`  ${f}`);
    process.exit(1);
  }
  const version = require('pg/package.json').version;
  console.log(`pg_test: pg ${version}, ${CLIENTS} clients x ${ROUNDS} rounds ok in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}

main().catch((e) => {
  console.error(`pg_test: ${e.stack}`);
  process.exit(1);
});
