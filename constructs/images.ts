import * as fs from 'node:fs';
import * as path from 'node:path';

/** One container image an install uses, as listed in images/manifest.json. */
export interface ImageEntry {
  readonly name: string;
  /** Repository at its public source, without tag, e.g. `docker.io/hashicorp/nomad`. */
  readonly source: string;
  readonly tag: string;
  readonly usedBy: string;
  readonly build?: string;
}

/** One Helm chart an install uses. */
export interface ChartEntry {
  readonly name: string;
  readonly repository: string;
  readonly version: string;
  /** Names of the images (from `images`) the chart's pods run. */
  readonly images: string[];
  readonly usedBy: string;
}

export interface ImageManifest {
  readonly images: ImageEntry[];
  readonly charts: ChartEntry[];
}

/** Path of the manifest that lists every image and chart an install uses. */
export const MANIFEST_FILE = path.join(__dirname, '..', 'images', 'manifest.json');

/** Reads images/manifest.json. */
export function readImageManifest(file = MANIFEST_FILE): ImageManifest {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as ImageManifest;
}

export interface ImageCatalogProps {
  /** Private registry (host and optional path) that mirrors every image. @default - the public sources */
  readonly registry?: string;
  /** Tag for Gyre's own images (runtime, agent). @default - the tag in the manifest */
  readonly gyreTag?: string;
  /** Helm repository that mirrors every chart. @default - each chart's public repository */
  readonly helmRepository?: string;
  /** @default - images/manifest.json */
  readonly manifest?: ImageManifest;
}

const GYRE_IMAGES = ['runtime', 'agent'];

/**
 * Resolves image references for one environment.
 *
 * Every construct asks the catalog for an image instead of spelling one, so that setting `registry`
 * moves every reference in the synthesized output to the mirror.
 */
export class ImageCatalog {
  private readonly manifest: ImageManifest;

  constructor(private readonly props: ImageCatalogProps = {}) {
    this.manifest = props.manifest ?? readImageManifest();
  }

  /** The registry images are pulled from, if one is set. */
  get registry(): string | undefined {
    return this.props.registry;
  }

  /** Full reference, `repository:tag`, for the named image. */
  ref(name: string): string {
    return `${this.repository(name)}:${this.tag(name)}`;
  }

  /** Repository without tag, at the mirror when a registry is set. */
  repository(name: string): string {
    const entry = this.entry(name);
    return this.props.registry ? `${this.props.registry}/${mirrorPath(entry.source)}` : entry.source;
  }

  tag(name: string): string {
    const entry = this.entry(name);
    return GYRE_IMAGES.includes(name) && this.props.gyreTag ? this.props.gyreTag : entry.tag;
  }

  /** Repository and version to install the named chart from. */
  chart(name: string): { repository: string; version: string } {
    const chart = this.manifest.charts.find((c) => c.name === name);
    if (!chart) throw new Error(`chart ${JSON.stringify(name)} is not in images/manifest.json`);
    return { repository: this.props.helmRepository ?? chart.repository, version: chart.version };
  }

  private entry(name: string): ImageEntry {
    const entry = this.manifest.images.find((i) => i.name === name);
    if (!entry) {
      throw new Error(`image ${JSON.stringify(name)} is not in images/manifest.json; known: ${this.manifest.images.map((i) => i.name).join(', ')}`);
    }
    return entry;
  }
}

/** Path of an image inside a mirror: the source without its registry host. */
export function mirrorPath(source: string): string {
  const [first, ...rest] = source.split('/');
  return rest.length > 0 && (first.includes('.') || first.includes(':')) ? rest.join('/') : source;
}
