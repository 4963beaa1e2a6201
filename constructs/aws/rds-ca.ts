import * as fs from 'node:fs';
import * as path from 'node:path';
import { X509Certificate } from 'node:crypto';

/** The RDS CA bundle the runtime image ships (images/ca/ → /opt/gyre/ca/ in the image). */
export const RDS_CA_BUNDLE_FILE = path.join(__dirname, '..', '..', 'images', 'ca', 'rds-global-bundle.pem');
/** Where the runtime image keeps that bundle. */
export const RDS_CA_BUNDLE_IMAGE_PATH = '/opt/gyre/ca/rds-global-bundle.pem';
/** The certificate authority RDS instances are created with; the bundle must hold its root for the region. */
export const RDS_CA_IDENTIFIER = 'rds-ca-rsa2048-g1';

/** Common names of the certificates in a PEM bundle. */
export function bundleSubjects(file: string = RDS_CA_BUNDLE_FILE): string[] {
  const pem = fs.readFileSync(file, 'utf8');
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  return blocks.map((block) => {
    const cn = /CN=([^\n]+)/.exec(new X509Certificate(block).subject);
    return cn ? cn[1].trim() : '';
  });
}

/** Throws unless the bundle holds the root of RDS_CA_IDENTIFIER for the region. */
export function checkRdsBundleCoversRegion(region: string, file: string = RDS_CA_BUNDLE_FILE): void {
  const wanted = `Amazon RDS ${region} Root CA RSA2048 G1`;
  if (!bundleSubjects(file).includes(wanted)) {
    throw new Error(`region (${region}): ${path.basename(file)} holds no "${wanted}" certificate, so the runtime could not verify the database; refresh images/ca/rds-global-bundle.pem (images/ca/README.md)`);
  }
}
