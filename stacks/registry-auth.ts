import { Fn } from 'cdktf';
import { IConstruct } from 'constructs';
import { ClientRegistryAuth } from '../constructs/nomad-client-bootstrap';
import { EnvironmentDefinition } from './environment';
import { pathFromStackDirectory } from './paths';

/** How the environment's Nomad clients authenticate to its registry for the agent image. */
export function clientRegistryAuth(scope: IConstruct, env: EnvironmentDefinition): ClientRegistryAuth {
  const creds = env.nomad.registryCredentials;
  switch (creds.source) {
    case 'none':
      return { kind: 'none' };
    case 'cloud': {
      const registryHost = env.registry!.split('/')[0];
      return env.cloud === 'aws' ? { kind: 'ecr', registryHost } : { kind: 'gce', registryHost };
    }
    case 'file':
      // Read by Terraform at plan time, so the credentials never land in cdktf.out.
      return { kind: 'docker-config', configJson: Fn.file(pathFromStackDirectory(scope, creds.file)) };
  }
}
