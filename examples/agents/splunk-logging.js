// Node.js with Splunk's own HEC library (npm: splunk-logging): see tools/hec-client/send.js for
// the sender tests/agents.rs runs. The key comes from the environment: TV1_API_KEY.
const { Logger } = require("splunk-logging");

const logger = new Logger({
  url: "https://ingest.example.com", // path defaults to /services/collector/event/1.0
  token: process.env.TV1_API_KEY,
  maxBatchCount: 100,
  maxRetries: 5,
});
// Send the Windows event itself as HEC `event`, not the library's {message, severity} wrapper.
logger.eventFormatter = (message) => message;
logger.error = (err) => console.error(`ad-ingest refused the batch: ${err.message} (HEC code ${err.code})`);

module.exports = (windowsEvent) =>
  logger.send({ message: windowsEvent, metadata: { host: windowsEvent.winlog?.computer_name } });
