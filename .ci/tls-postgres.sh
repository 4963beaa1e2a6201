# Sourced by .ci/run: a second PostgreSQL cluster (`tls`, port 5433) that only takes TLS
# connections, with a server certificate for the name localhost (not 127.0.0.1) from a CA made here, so
# test/store/database-tls.test.ts can prove `sslmode=verify-full&sslrootcert=…` (what the cluster
# install's DATABASE_URL uses) verifies the server. About 3 s; the certificates live in
# /var/lib/gyre-ci/tls-postgres and the cluster is reused when it is there.
start_tls_postgres() {
  local version dir port=5433
  version="$(ls /etc/postgresql | sort -V | tail -1)"
  dir=/var/lib/gyre-ci/tls-postgres
  if [ ! -f "$dir/server.crt" ] || [ ! -f "$dir/other-ca.crt" ]; then
    mkdir -p "$dir"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj '/CN=Gyre CI database CA' \
      -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj '/CN=Some other CA' \
      -keyout "$dir/other-ca.key" -out "$dir/other-ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj '/CN=localhost' -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost\n' > "$dir/server.ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
      -days 3650 -extfile "$dir/server.ext" -out "$dir/server.crt" 2>/dev/null
    chown postgres:postgres "$dir/server.key" "$dir/server.crt"
    chmod 600 "$dir/server.key"
    chmod 644 "$dir/ca.crt" "$dir/other-ca.crt"
  fi
  if ! pg_lsclusters -h | awk '{print $2}' | grep -qx tls; then
    pg_createcluster "$version" tls --port "$port" >/dev/null
    local conf="/etc/postgresql/$version/tls"
    {
      echo "ssl = on"
      echo "ssl_cert_file = '$dir/server.crt'"
      echo "ssl_key_file = '$dir/server.key'"
      echo "listen_addresses = '127.0.0.1'"
    } >> "$conf/postgresql.conf"
    # TLS only, no password (the tests check the server's certificate, not the client's).
    printf 'local all postgres peer\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 0.0.0.0/0 reject\n' > "$conf/pg_hba.conf"
  fi
  if ! pg_isready -q -h 127.0.0.1 -p "$port"; then
    pg_ctlcluster --skip-systemctl-redirect "$version" tls start
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p "$port" && break; sleep 1; done
  fi
  export GYRE_TEST_TLS_DATABASE_URL="postgres://postgres@localhost:$port/postgres"
  export GYRE_TEST_TLS_DATABASE_CA="$dir/ca.crt"
  export GYRE_TEST_TLS_DATABASE_OTHER_CA="$dir/other-ca.crt"
}
