/** Container ports of the edge proxy, by name. */
export const EDGE_PORTS = {
  'http': 8080,
  'https': 8443,
  'https-offload': 8444,
  'nomad-rpc': 4647,
} as const;

export interface EdgeConfigProps {
  readonly namespace: string;
  readonly domain: string;
  /** Terminate TLS on 8443 with /etc/nginx/tls; otherwise the load balancer already did (ACM). */
  readonly terminateTls: boolean;
  /** Port of the api role's Service. */
  readonly apiPort: number;
}

/**
 * nginx configuration for the edge proxy. One LoadBalancer Service can only select one set of pods,
 * so the edge receives every public port and forwards each to its backend: HTTP(S) to the api role
 * (the only role that serves HTTP; agents send output through it too), and raw TCP for Nomad RPC
 * (mutual TLS passes through untouched) to the Nomad servers.
 *
 * No dollar-brace forms: Terraform would read them as its own interpolation.
 */
export function renderEdgeConfig(props: EdgeConfigProps): string {
  const svc = (name: string, port: number) => `${name}.${props.namespace}.svc.cluster.local:${port}`;
  const proxy = [
    `      proxy_pass http://api;`,
    '      proxy_http_version 1.1;',
    '      proxy_set_header Host $host;',
    '      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;',
    '      proxy_set_header X-Forwarded-Proto https;',
    '      proxy_set_header Upgrade $http_upgrade;',
    '      proxy_set_header Connection $connection_upgrade;',
    '      # Live logs (SSE) and WebSockets must not be buffered.',
    '      proxy_buffering off;',
    '      proxy_read_timeout 1h;',
  ].join('\n');
  return `worker_processes auto;
pid /tmp/nginx.pid;
error_log /dev/stderr warn;
events { worker_connections 4096; }

http {
  access_log /dev/stdout;
  client_body_temp_path /tmp/client_temp;
  proxy_temp_path /tmp/proxy_temp;
  fastcgi_temp_path /tmp/fastcgi_temp;
  uwsgi_temp_path /tmp/uwsgi_temp;
  scgi_temp_path /tmp/scgi_temp;
  client_max_body_size 5g;
  server_tokens off;
  map $http_upgrade $connection_upgrade { default upgrade; '' close; }
  upstream api { server ${svc('gyre-api', props.apiPort)}; }

  server {
    listen ${EDGE_PORTS.http};
    server_name ${props.domain};
    location = /edge-healthz { return 200 'ok'; }
    location / { return 308 https://$host$request_uri; }
  }
${props.terminateTls ? `
  server {
    listen ${EDGE_PORTS.https} ssl;
    http2 on;
    server_name ${props.domain};
    ssl_certificate /etc/nginx/tls/tls.crt;
    ssl_certificate_key /etc/nginx/tls/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    add_header Strict-Transport-Security "max-age=31536000" always;
    location / {
${proxy}
    }
  }
` : `
  server {
    listen ${EDGE_PORTS['https-offload']};
    server_name ${props.domain};
    add_header Strict-Transport-Security "max-age=31536000" always;
    location / {
${proxy}
    }
  }
`}}

stream {
  server { listen ${EDGE_PORTS['nomad-rpc']}; proxy_pass ${svc('nomad-server', 4647)}; }
}
`;
}
