// Drives headless Chromium for edgepack's browser device: reads {chromium, url, job, timeout_ms} as JSON on
// stdin, opens url (the harness page, served from loopback), calls window.edgepackRun(job) and writes
// {result, browser, console} as JSON on stdout. Exit 1 with a one-line reason on stderr when it cannot.
import { chromium } from "playwright-core";

// The flags a closed network needs: nothing tries to reach the outside (updates, sync, QUIC, first-run).
const FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions"];

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

async function main() {
  const request = await readStdin();
  const context = await chromium.launchPersistentContext(request.user_data_dir, {
    executablePath: request.chromium, headless: true, args: FLAGS, timeout: request.timeout_ms,
  });
  const messages = [];
  try {
    const page = context.pages()[0] || await context.newPage();
    page.setDefaultTimeout(request.timeout_ms);
    page.on("console", (m) => { if (m.type() === "error") messages.push(m.text()); });
    page.on("pageerror", (e) => messages.push(String(e)));
    await page.goto(request.url);
    await page.waitForFunction(() => window.edgepackReady === true);
    const result = await page.evaluate((job) => window.edgepackRun(job), request.job);
    process.stdout.write(JSON.stringify({ result, browser: context.browser()?.version() ?? null,
      user_agent: await page.evaluate(() => navigator.userAgent), console: messages }));
  } finally {
    await context.close();
  }
}

main().catch((error) => {
  const line = String(error && error.message ? error.message : error).split("\n")[0];
  process.stderr.write(`${line}\n`);
  process.exit(1);
});
