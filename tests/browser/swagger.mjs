// Swagger UI at /docs of a running Tolstoy, in Debian's headless Chromium: the page renders the
// operations with no network beyond the server, Authorize offers the bearer key and both tenant
// headers, and "Try it out" works on screen. In headers mode it creates an organization, its
// first user, lists the users, makes an API key and lists the users again with only the key
// pasted; in keys mode (AUTH_MODE=keys, against a server with SIGNUP=open) it signs up and
// lists the users with the owner key.
//
//   BASE_URL=http://127.0.0.1:3000 SCREENSHOT_DIR=/tmp node tests/browser/swagger.mjs
import { chromium } from 'playwright-core';
import { randomUUID } from 'node:crypto';
import assert from 'node:assert/strict';

const base = process.env.BASE_URL ?? 'http://127.0.0.1:3000';
const shots = process.env.SCREENSHOT_DIR ?? '/tmp';
const mode = process.env.AUTH_MODE ?? 'headers';
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

  // Authorize offers the bearer key, and in headers mode both tenant headers (in keys mode they
  // would not let anyone in, so the document does not offer them).
  await page.locator('button.authorize').first().click();
  const dialog = page.locator('.modal-ux');
  await dialog.waitFor();
  const dialogText = await dialog.innerText();
  const headers = ['X-Org-ID', 'X-User-ID'];
  assert.ok(dialogText.includes('ApiKey'), `Authorize offers the key: ${dialogText}`);
  for (const header of headers) {
    assert.equal(dialogText.includes(header), mode === 'headers', `${header} in ${mode} mode: ${dialogText}`);
  }
  await dialog.locator('button.close-modal').click();
  step(mode === 'headers' ? 'Authorize offers ApiKey, X-Org-ID and X-User-ID' : 'Authorize offers ApiKey alone');

  // "Try it out" on an operation: open it, fill the body, execute, read the answer on screen.
  async function tryOut(id, body) {
    const block = page.locator(`#${id}`);
    await block.locator('.opblock-summary').click();
    // A block tried out before is still in "Try it out" mode (its button then says Cancel).
    const tryButton = block.locator('button.try-out__btn');
    if ((await tryButton.innerText()).includes('Try it out')) await tryButton.click();
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

  // Authorize with the given value of each named security scheme; logs out of every other one.
  async function authorize(values) {
    await page.locator('button.authorize').first().click();
    const modal = page.locator('.modal-ux');
    await modal.waitFor();
    const logout = modal.locator('button:has-text("Logout")');
    while (await logout.count()) await logout.first().click();
    for (const [scheme, value] of Object.entries(values)) {
      // One form per scheme, headed "<scheme> (<type>)".
      const heading = page.locator("h4", { hasText: new RegExp(`^\\s*${scheme}\\s*\\(`) });
      const container = modal.locator("form").filter({ has: heading });
      await container.locator('input').first().fill(value);
      await container.locator('button.modal-btn.auth.authorize').click();
    }
    await modal.locator('button.close-modal').click();
  }

  // "Try it out" of GET /users with nothing but a pasted key, which the server must take.
  async function listUsersWithKey(key, email) {
    await authorize({ ApiKey: key });
    const list = await tryOut('operations-Users-listUsers');
    assert.equal(list.status, '200', JSON.stringify(list.body));
    assert.deepEqual(list.body.map((u) => u.email), [email]);
    await list.block.locator('.opblock-summary').click();
    step('a pasted API key works on a tenant route');
  }

  if (mode === 'keys') {
    // Keys mode: sign up (SIGNUP=open), paste the owner key, list the users with it.
    const signup = await tryOut('operations-Signup-signUp',
      { organization: { name: 'Browser Org' }, owner: { email: 'ada@example.com', name: 'Ada' } });
    assert.equal(signup.status, '201', JSON.stringify(signup.body));
    assert.match(signup.body.apiKey.key, /^tol_[0-9A-Za-z]{38}$/);
    await signup.block.locator('.opblock-summary').click();
    await listUsersWithKey(signup.body.apiKey.key, 'ada@example.com');
  } else {
    const org = await tryOut('operations-Organizations-createOrganization', { name: 'Browser Org' });
    assert.equal(org.status, '201');
    await org.block.locator('.opblock-summary').click();

    await authorize({ OrgId: org.body.id, UserId: randomUUID() });
    const user = await tryOut('operations-Users-createUser', { email: 'ada@example.com', name: 'Ada' });
    assert.equal(user.status, '201', JSON.stringify(user.body));
    await user.block.locator('.opblock-summary').click();

    await authorize({ OrgId: org.body.id, UserId: user.body.id });
    const list = await tryOut('operations-Users-listUsers');
    assert.equal(list.status, '200', JSON.stringify(list.body));
    assert.deepEqual(list.body.map((u) => u.email), ['ada@example.com']);
    await list.block.locator('.opblock-summary').click();

    const key = await tryOut('operations-API_keys-createApiKey', { name: 'browser' });
    assert.equal(key.status, '201', JSON.stringify(key.body));
    await key.block.locator('.opblock-summary').click();
    await listUsersWithKey(key.body.key, 'ada@example.com');
  }

  assert.deepEqual(outside, [], 'the page reached beyond the server');
  await page.screenshot({ path: `${shots}/swagger-ui-${mode}.png`, fullPage: false });
  step(`all checks passed in ${mode} mode; screenshot ${shots}/swagger-ui-${mode}.png`);
} catch (error) {
  await page.screenshot({ path: `${shots}/swagger-ui-failure.png` }).catch(() => {});
  throw error;
} finally {
  await browser.close();
}
