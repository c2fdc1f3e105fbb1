// @polymarket/real-time-data-client against polysim's RTDS: subscribe to activity trades and Chainlink prices the
// way its README shows, print every message it hands to onMessage (one JSON line each) until the parent stops us.
import { RealTimeDataClient } from "@polymarket/real-time-data-client";

const { rtds, seconds } = JSON.parse(process.argv[2]);
const print = (doc) => process.stdout.write(JSON.stringify(doc) + "\n");
const client = new RealTimeDataClient({
  host: rtds,
  onConnect: (c) => {
    c.subscribe({ subscriptions: [
      { topic: "activity", type: "trades" },
      { topic: "crypto_prices_chainlink", type: "*", filters: JSON.stringify({ symbol: "btc/usd" }) },
    ] });
    print({ step: "subscribed" });
  },
  onMessage: (_c, message) => print({ step: "message", message }),
});
client.connect();
setTimeout(() => { client.disconnect(); process.exit(0); }, seconds * 1000);
