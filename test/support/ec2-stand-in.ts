import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { bootMachine, type BootedMachine } from './machine-boot';

/**
 * A stand-in for the Amazon EC2 API (no EC2 here), covering only what Gyre's EC2 machine provider
 * calls, in EC2's own Query protocol (form-encoded `Action=…&Version=2016-11-15` requests, XML
 * answers in the 2016-11-15 namespace, errors as `<Response><Errors><Error>`), as the EC2 API
 * reference describes RunInstances, DescribeInstances and TerminateInstances. Launch templates
 * are given up front (name → AMI); RunInstances refuses an unknown one as EC2 does
 * (InvalidLaunchTemplateName.NotFoundException). Only the SDK's endpoint points here.
 *
 * With `boot`, a launched instance "boots": its user data runs under `sh` on this host
 * (test/support/machine-boot.ts), so the agent it starts is real.
 */
export interface Ec2StandInOptions {
  /** Launch template name → AMI. */
  readonly launchTemplates: Record<string, string>;
  /** Run each instance's user data. @default false */
  boot?: boolean;
}

export interface Ec2Instance {
  readonly id: string;
  readonly imageId: string;
  readonly launchTemplate: string;
  readonly instanceType?: string;
  state: 'pending' | 'running' | 'shutting-down' | 'terminated';
  readonly tags: Record<string, string>;
  /** Every parameter of the RunInstances call that made it, as sent. */
  readonly params: Record<string, string>;
  readonly userData: string;
  machine?: BootedMachine;
}

export interface Ec2StandIn {
  readonly url: string;
  readonly instances: Ec2Instance[];
  /** Every Action called, in order. */
  readonly calls: string[];
  readonly options: Ec2StandInOptions;
  close(): Promise<void>;
}

const NS = 'http://ec2.amazonaws.com/doc/2016-11-15/';
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const STATE_CODES = { pending: 0, running: 16, 'shutting-down': 32, terminated: 48 } as const;

/** `Prefix.1.Key`-style lists of the Query protocol. */
function list(params: Record<string, string>, prefix: string): string[] {
  const out: string[] = [];
  for (let i = 1; params[`${prefix}.${i}`] !== undefined; i++) out.push(params[`${prefix}.${i}`]);
  return out;
}

export async function startEc2StandIn(options: Ec2StandInOptions): Promise<Ec2StandIn> {
  const instances: Ec2Instance[] = [];
  const calls: string[] = [];
  const requestId = () => randomBytes(8).toString('hex');

  const instanceXml = (i: Ec2Instance) =>
    `<item><instanceId>${i.id}</instanceId><imageId>${i.imageId}</imageId>` +
    `<instanceState><code>${STATE_CODES[i.state]}</code><name>${i.state}</name></instanceState>` +
    (i.instanceType ? `<instanceType>${esc(i.instanceType)}</instanceType>` : '') +
    `<tagSet>${Object.entries(i.tags).map(([k, v]) => `<item><key>${esc(k)}</key><value>${esc(v)}</value></item>`).join('')}</tagSet></item>`;

  function error(res: ServerResponse, status: number, code: string, message: string) {
    res.writeHead(status, { 'content-type': 'text/xml' });
    res.end(`<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>${code}</Code><Message>${esc(message)}</Message></Error></Errors><RequestID>${requestId()}</RequestID></Response>`);
  }
  function answer(res: ServerResponse, action: string, body: string) {
    res.writeHead(200, { 'content-type': 'text/xml;charset=UTF-8' });
    res.end(`<?xml version="1.0" encoding="UTF-8"?><${action}Response xmlns="${NS}"><requestId>${requestId()}</requestId>${body}</${action}Response>`);
  }

  function handle(params: Record<string, string>, res: ServerResponse) {
    const action = params.Action;
    calls.push(action);
    if (params.Version !== '2016-11-15') return error(res, 400, 'InvalidParameterValue', `Version ${params.Version} is not 2016-11-15`);
    if (action === 'RunInstances') {
      if (params.MinCount === undefined || params.MaxCount === undefined) return error(res, 400, 'MissingParameter', 'The request must contain the parameter MinCount and MaxCount');
      const name = params['LaunchTemplate.LaunchTemplateName'];
      const ami = name === undefined ? undefined : options.launchTemplates[name];
      if (!ami) return error(res, 400, 'InvalidLaunchTemplateName.NotFoundException', `The specified launch template, with template name ${name}, does not exist.`);
      const tags: Record<string, string> = {};
      for (let s = 1; params[`TagSpecification.${s}.ResourceType`]; s++) {
        if (params[`TagSpecification.${s}.ResourceType`] !== 'instance') continue;
        for (let t = 1; params[`TagSpecification.${s}.Tag.${t}.Key`] !== undefined; t++) tags[params[`TagSpecification.${s}.Tag.${t}.Key`]] = params[`TagSpecification.${s}.Tag.${t}.Value`] ?? '';
      }
      const instance: Ec2Instance = {
        id: `i-${randomBytes(8).toString('hex').slice(0, 17)}`,
        imageId: ami,
        launchTemplate: name!,
        instanceType: params.InstanceType,
        state: 'pending',
        tags,
        params,
        userData: Buffer.from(params.UserData ?? '', 'base64').toString('utf8'),
      };
      instances.push(instance);
      if (options.boot) {
        instance.state = 'running';
        instance.machine = bootMachine(instance.userData);
        instance.machine.process.on('exit', () => {
          // InstanceInitiatedShutdownBehavior=terminate: powering off ends the instance.
          if (instance.machine?.poweredOff() && params.InstanceInitiatedShutdownBehavior === 'terminate') instance.state = 'terminated';
        });
      }
      return answer(res, action, `<reservationId>r-${randomBytes(8).toString('hex')}</reservationId><ownerId>123456789012</ownerId><groupSet/><instancesSet>${instanceXml(instance)}</instancesSet>`);
    }
    if (action === 'DescribeInstances') {
      let found = instances;
      for (let f = 1; params[`Filter.${f}.Name`]; f++) {
        const name = params[`Filter.${f}.Name`];
        const values = list(params, `Filter.${f}.Value`);
        if (name === 'instance-state-name') found = found.filter((i) => values.includes(i.state));
        else if (name.startsWith('tag:')) found = found.filter((i) => values.includes(i.tags[name.slice(4)]));
        else return error(res, 400, 'InvalidParameterValue', `The filter '${name}' is invalid`);
      }
      const ids = list(params, 'InstanceId');
      if (ids.length) found = found.filter((i) => ids.includes(i.id));
      return answer(res, action, `<reservationSet>${found.map((i) => `<item><reservationId>r-0</reservationId><ownerId>123456789012</ownerId><instancesSet>${instanceXml(i)}</instancesSet></item>`).join('')}</reservationSet>`);
    }
    if (action === 'TerminateInstances') {
      const ids = list(params, 'InstanceId');
      const unknown = ids.find((id) => !instances.some((i) => i.id === id));
      if (unknown) return error(res, 400, 'InvalidInstanceID.NotFound', `The instance ID '${unknown}' does not exist`);
      const items = ids.map((id) => {
        const i = instances.find((x) => x.id === id)!;
        const previous = i.state;
        i.state = 'terminated';
        i.machine?.kill();
        return `<item><instanceId>${id}</instanceId><currentState><code>48</code><name>terminated</name></currentState><previousState><code>${STATE_CODES[previous]}</code><name>${previous}</name></previousState></item>`;
      });
      return answer(res, action, `<instancesSet>${items.join('')}</instancesSet>`);
    }
    return error(res, 400, 'InvalidAction', `The action ${action} is not valid for this web service.`);
  }

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      // Every call is signed (SigV4): an unsigned one is refused as EC2 would.
      if (!/^AWS4-HMAC-SHA256 Credential=/.test(String(req.headers.authorization ?? ''))) return error(res, 401, 'AuthFailure', 'AWS was not able to validate the provided access credentials');
      const params = Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString('utf8')));
      try {
        handle(params, res);
      } catch (e) {
        error(res, 500, 'InternalError', (e as Error).message);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    instances,
    calls,
    options,
    async close() {
      for (const i of instances) i.machine?.kill();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
