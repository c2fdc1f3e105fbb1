// @polymarket/clob-client-v2 against polysim: keys, book, a resting GTC, its cancel, and a market BUY capped at
// 1 - tick (FAK) that must be accepted and matched.
import { ClobClient, Side, OrderType } from "@polymarket/clob-client-v2";
import { Wallet } from "ethers";

const { clob, key, token } = JSON.parse(process.argv[2]);
const print = (doc) => process.stdout.write(JSON.stringify(doc) + "\n");
const signer = new Wallet(key);
const creds = await new ClobClient({ host: clob, chain: 137, signer }).createOrDeriveApiKey();
print({ step: "creds", creds });
const client = new ClobClient({ host: clob, chain: 137, signer, creds });
print({ step: "version", version: await client.getVersion() });
print({ step: "book", book: await client.getOrderBook(token) });
const resting = await client.createAndPostOrder({ tokenID: token, price: 0.02, size: 10, side: Side.BUY },
                                                { tickSize: "0.01", negRisk: false }, OrderType.GTC);
print({ step: "resting", response: resting });
print({ step: "cancel", response: await client.cancelOrder({ orderID: resting.orderID }) });
const capped = await client.createAndPostMarketOrder({ tokenID: token, amount: 2, side: Side.BUY, price: 0.99 },
                                                     { tickSize: "0.01", negRisk: false }, OrderType.FAK);
print({ step: "capped", response: capped });
print({ step: "trades", trades: await client.getTrades({ id: capped.tradeIDs?.[0] }) });
