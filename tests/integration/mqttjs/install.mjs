// The ctest fixture of the MQTT.js tests: `npm ci` of package-lock.json into the folder given as
// the first argument (in the build tree; CMakeLists.txt copies package.json and the lock there),
// unless that folder already holds this very lock's install. Exit status: 0 installed, 1 failed
// with MQTTBROKER_REQUIRE_CLIENTS set (CI), 77 (ctest's Skipped) failed elsewhere: the tests then
// run and report themselves skipped, naming the cause.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const [dir, npm = 'npm'] = process.argv.slice(2);
const required = !['', '0'].includes(process.env.MQTTBROKER_REQUIRE_CLIENTS ?? '');
const lock = fs.readFileSync(path.join(dir, 'package-lock.json'));
const stamp = path.join(dir, 'node_modules', '.mqttbroker-installed-lock.json');

function failed(why) {
  console.log(`${required ? 'FAILED' : 'SKIPPED'}: MQTT.js not installed: ${why}`);
  process.exit(required ? 1 : 77);
}

if (fs.existsSync(stamp) && fs.readFileSync(stamp).equals(lock)) {
  console.log(`MQTT.js already installed in ${dir} from this package-lock.json`);
  process.exit(0);
}
// --prefer-offline: npm's cache first, so a second build tree installs without the network.
const r = spawnSync(npm, ['ci', '--no-audit', '--no-fund', '--ignore-scripts', '--prefer-offline'],
  { cwd: dir, stdio: 'inherit', timeout: 240_000 });
if (r.error) failed(`${npm}: ${r.error.message}`);
if (r.status !== 0) failed(`npm ci exited with ${r.status ?? r.signal}`);
fs.writeFileSync(stamp, lock);
