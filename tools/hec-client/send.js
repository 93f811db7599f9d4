// Sends Windows Security events (Winlogbeat shape) to an HTTP Event Collector endpoint with
// Splunk's own JavaScript logging library, one batch at a time, printing "batch <n> ok" after
// each acknowledged batch. Used by tests/agents.rs.
//
//   node send.js <url> <token> <first record id> <count> [batch size] [pause ms]
//
// Every event carries a fixed time (EVENT_TIME, epoch seconds), so a rerun sends byte-identical
// batches: that is what makes a resend after a crash a no-op on the server.
const { Logger } = require("splunk-logging");

const [url, token, first, count, batch = "10", pause = "0"] = process.argv.slice(2);
const time = Number(process.env.EVENT_TIME || Math.floor(Date.now() / 1000));
const logger = new Logger({ token, url, maxBatchCount: 0, maxRetries: 3 });
// The HEC `event` is the Windows event itself, not the library's {message, severity} wrapper.
logger.eventFormatter = (message) => message;
logger.error = (err) => {
  console.error(JSON.stringify({ error: err.message, code: err.code }));
  process.exitCode = 1;
};

const flush = () => new Promise((resolve) => logger.flush((err, resp) => resolve(!err && resp && resp.statusCode === 200)));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

(async () => {
  const end = Number(first) + Number(count);
  for (let start = Number(first), n = 0; start < end; start += Number(batch), n++) {
    for (let i = start; i < Math.min(start + Number(batch), end); i++) {
      logger.send({
        message: {
          "@timestamp": new Date(time * 1000).toISOString(),
          winlog: { event_id: 4624, computer_name: "DC05.corp.example", record_id: i, channel: "Security" },
        },
        metadata: { time, host: "DC05.corp.example", source: "WinEventLog:Security", sourcetype: "WinEventLog" },
      });
    }
    if (!(await flush())) return;
    console.log(`batch ${n} ok`);
    await sleep(Number(pause));
  }
})();
