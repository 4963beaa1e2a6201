// `npm run images:list [-- --registry <host/path>]`: prints every image and Helm chart an install
// uses, and where each goes in a private registry, so operators can mirror them before installing.
import { mirrorPath, readImageManifest } from '../constructs/images';

const args = process.argv.slice(2);
const at = args.indexOf('--registry');
const registry = at >= 0 ? args[at + 1] : undefined;
if (at >= 0 && !registry) {
  console.error('usage: images:list [--registry <host/path>]');
  process.exit(2);
}

const manifest = readImageManifest();
console.log('# images (source -> mirror)');
for (const image of manifest.images) {
  const source = `${image.source}:${image.tag}`;
  const mirror = `${registry ?? '<registry>'}/${mirrorPath(image.source)}:${image.tag}`;
  console.log(`${source}\t${mirror}\t# ${image.usedBy}`);
}
console.log('# helm charts (repository chart version)');
for (const chart of manifest.charts) {
  console.log(`${chart.repository}\t${chart.name}\t${chart.version}\t# ${chart.usedBy}`);
}
