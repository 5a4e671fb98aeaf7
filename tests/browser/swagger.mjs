// Swagger UI at /docs of a running Tolstoy, in Debian's headless Chromium: the page renders the
// operations with no network beyond the server, Authorize offers both tenant headers, and "Try
// it out" creates an organization, its first user, and lists the users, all on screen.
//
//   BASE_URL=http://127.0.0.1:3000 SCREENSHOT_DIR=/tmp node tests/browser/swagger.mjs
import { chromium } from 'playwright-core';
import { randomUUID } from 'node:crypto';
import assert from 'node:assert/strict';

const base = process.env.BASE_URL ?? 'http://127.0.0.1:3000';
const shots = process.env.SCREENSHOT_DIR ?? '/tmp';
const step = (text) => console.error(`browser: ${text}`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--no-first-run'],
});
const page = await browser.newPage({ viewport: { width: 1400, height: 2000 } });
const outside = [];
await page.route('**/*', (route) => {
  const url = new URL(route.request().url());
  if (url.origin === new URL(base).origin || url.protocol === 'data:' || url.protocol === 'blob:') {
    return route.continue();
  }
  outside.push(url.href);
  return route.abort();
});

try {
  await page.goto(`${base}/docs`, { waitUntil: 'networkidle' });
  await page.locator('.opblock').first().waitFor();
  const operations = await page.locator('.opblock').count();
  step(`${operations} operations rendered`);
  assert.ok(operations >= 32, `expected every operation on the page, saw ${operations}`);
  const tags = await page.locator('.opblock-tag-section h3 .nostyle span').allInnerTexts();
  assert.deepEqual(tags.slice(0, 6), ['Organizations', 'Users', 'Tools', 'Actions', 'Flows', 'Execution logs'],
    `resources listed as a user meets them: ${tags}`);
  step(`tags in order: ${tags.join(', ')}`);

  // Authorize offers both tenant headers.
  await page.locator('button.authorize').first().click();
  const dialog = page.locator('.modal-ux');
  await dialog.waitFor();
  const dialogText = await dialog.innerText();
  for (const header of ['X-Org-ID', 'X-User-ID']) {
    assert.ok(dialogText.includes(header), `Authorize offers ${header}: ${dialogText}`);
  }
  await dialog.locator('button.close-modal').click();
  step('Authorize offers X-Org-ID and X-User-ID');

  // "Try it out" on an operation: open it, fill the body, execute, read the answer on screen.
  async function tryOut(id, body) {
    const block = page.locator(`#${id}`);
    await block.locator('.opblock-summary').click();
    await block.locator('button.try-out__btn').click();
    if (body !== undefined) {
      await block.locator('textarea.body-param__text').fill(JSON.stringify(body));
    }
    await block.locator('button.execute').click();
    const live = block.locator('.live-responses-table .response');
    await live.first().waitFor();
    const status = (await live.locator('.response-col_status').first().innerText()).trim();
    const text = await live.locator('.response-col_description pre').first().innerText();
    step(`${id}: ${status}`);
    return { status, body: JSON.parse(text), block };
  }

  async function authorize(orgId, userId) {
    await page.locator('button.authorize').first().click();
    const modal = page.locator('.modal-ux');
    await modal.waitFor();
    const logout = modal.locator('button:has-text("Logout")');
    while (await logout.count()) await logout.first().click();
    const inputs = modal.locator('input[type="text"]');
    await inputs.nth(0).fill(orgId);
    await inputs.nth(1).fill(userId);
    const buttons = modal.locator('button.modal-btn.auth.authorize');
    while (await buttons.count()) await buttons.first().click();
    await modal.locator('button.close-modal').click();
  }

  const org = await tryOut('operations-Organizations-createOrganization', { name: 'Browser Org' });
  assert.equal(org.status, '201');
  await org.block.locator('.opblock-summary').click();

  await authorize(org.body.id, randomUUID());
  const user = await tryOut('operations-Users-createUser', { email: 'ada@example.com', name: 'Ada' });
  assert.equal(user.status, '201', JSON.stringify(user.body));
  await user.block.locator('.opblock-summary').click();

  await authorize(org.body.id, user.body.id);
  const list = await tryOut('operations-Users-listUsers');
  assert.equal(list.status, '200', JSON.stringify(list.body));
  assert.deepEqual(list.body.map((u) => u.email), ['ada@example.com']);

  assert.deepEqual(outside, [], 'the page reached beyond the server');
  await page.screenshot({ path: `${shots}/swagger-ui.png`, fullPage: false });
  step(`all checks passed; screenshot ${shots}/swagger-ui.png`);
} catch (error) {
  await page.screenshot({ path: `${shots}/swagger-ui-failure.png` }).catch(() => {});
  throw error;
} finally {
  await browser.close();
}
