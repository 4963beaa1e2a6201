/**
 * @cdktf/hcl2json's `parse` (HCL to its JSON form), loaded without its type declarations: they
 * reference the DOM library, which would change how the whole project's `fetch` calls type-check.
 */
// eslint-disable-next-line @typescript-eslint/no-require-imports
export const parseHcl: (file: string, text: string) => Promise<Record<string, any>> = require('@cdktf/hcl2json').parse;
