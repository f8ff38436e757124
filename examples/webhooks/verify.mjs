// Checks a Herald webhook's signature (Standard Webhooks 1.0) with
// Node's own crypto: no package needed. An n8n Code node or any Node
// receiver can use verify() as it is.
import { createHmac, timingSafeEqual } from "node:crypto";

export function verify(secret, headers, body, toleranceSeconds = 300) {
  const id = headers["webhook-id"], ts = headers["webhook-timestamp"], sigs = headers["webhook-signature"];
  if (!id || !ts || !sigs) return false;
  if (Math.abs(Date.now() / 1000 - Number(ts)) > toleranceSeconds) return false; // replayed or clock skew
  const key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
  const want = createHmac("sha256", key).update(`${id}.${ts}.${body}`).digest();
  return sigs.split(" ").some((s) => {
    const [version, sig] = s.split(",");
    const got = Buffer.from(sig ?? "", "base64");
    return version === "v1" && got.length === want.length && timingSafeEqual(got, want);
  });
}

// node verify.mjs SECRET: reads {"headers":{…},"body":"…"} on stdin.
if (import.meta.url === `file://${process.argv[1]}`) {
  let input = "";
  process.stdin.on("data", (c) => (input += c));
  process.stdin.on("end", () => {
    const { headers, body } = JSON.parse(input);
    const ok = verify(process.argv[2], headers, body);
    console.log(ok ? "valid" : "invalid");
    process.exit(ok ? 0 : 1);
  });
}
