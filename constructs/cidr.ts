/** The `netnum`-th subnet of `cidr` that is `newBits` longer (Terraform's cidrsubnet, IPv4 only). */
export function cidrSubnet(cidr: string, newBits: number, netNum: number): string {
  const [addr, len] = cidr.split('/');
  const prefix = Number(len) + newBits;
  if (prefix > 32 || netNum >= 2 ** newBits) throw new Error(`cidrSubnet: ${cidr} has no subnet ${netNum} of /${prefix}`);
  const base = addr.split('.').reduce((acc, octet) => acc * 256 + Number(octet), 0);
  const value = base + netNum * 2 ** (32 - prefix);
  const octets = [24, 16, 8, 0].map((shift) => Math.floor(value / 2 ** shift) % 256);
  return `${octets.join('.')}/${prefix}`;
}

/** The `hostNum`-th address of `cidr` (Terraform's cidrhost, IPv4 only). */
export function cidrHost(cidr: string, hostNum: number): string {
  const [addr, len] = cidr.split('/');
  if (hostNum < 0 || hostNum >= 2 ** (32 - Number(len))) throw new Error(`cidrHost: ${cidr} has no host ${hostNum}`);
  const base = addr.split('.').reduce((acc, octet) => acc * 256 + Number(octet), 0);
  const value = base - (base % 2 ** (32 - Number(len))) + hostNum;
  return [24, 16, 8, 0].map((shift) => Math.floor(value / 2 ** shift) % 256).join('.');
}
