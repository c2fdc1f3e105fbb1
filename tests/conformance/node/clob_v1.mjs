// @polymarket/clob-client 5.8.1, the V1-signing client: keys work, a V1 order gets the venue's V1 refusal.
import { ClobClient, Side, OrderType } from "@polymarket/clob-client";
import { Wallet } from "ethers";

const { clob, key, token } = JSON.parse(process.argv[2]);
const print = (doc) => process.stdout.write(JSON.stringify(doc) + "\n");
const signer = new Wallet(key);
const l1 = new ClobClient(clob, 137, signer);
const creds = await l1.createOrDeriveApiKey();
print({ step: "creds", creds });
const client = new ClobClient(clob, 137, signer, creds);
print({ step: "book", book: await client.getOrderBook(token) });
const order = await client.createOrder({ tokenID: token, price: 0.02, size: 10, side: Side.BUY },
                                       { tickSize: "0.01", negRisk: false });
print({ step: "signed", order });
print({ step: "posted", response: await client.postOrder(order, OrderType.GTC) });
