#!/bin/sh
# Makes the certificates the TLS tests use, with the openssl command line, into DIR (created):
# nothing private is committed. EC P-256 keys, so it takes well under a second.
#   ca.crt            root CA; it signs the intermediate and the client certificates
#   int.crt           intermediate CA; it signs the servers'
#   server.crt/.key   CN "mqttbroker test server", SAN IP 127.0.0.1 and DNS localhost
#   server-chain.crt  server.crt then int.crt (what a listener's certfile holds)
#   server2-chain.crt, server2.key  another server certificate (CN "mqttbroker test server 2"), for reloads
#   alice, bob        client certificates (CN alice, CN bob) signed by the root
#   san-only          a client certificate without a CN, SAN DNS device-7.example
#   expired           CN expired, valid for one day in 2020
#   rogue-ca.crt, rogue  a CA nobody trusts, and a client certificate (CN alice) it signed
#   revoked           CN revoked, signed by the root and then revoked
#   crl.pem           the root's certificate revocation list: revoked is on it
#   crl-empty.pem     the same list from before the revocation
set -eu
dir=${1:?usage: make-certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
ossl() { openssl "$@" 2>/dev/null; }
key() { ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key"; }

printf 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n' > ca.ext
printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n' > server.ext
printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n' > client.ext
printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\nsubjectAltName=DNS:device-7.example\n' > san.ext

# CA NAME SUBJECT: a self-signed CA
ca() {
  key "$1"
  ossl req -x509 -new -key "$1.key" -subj "$2" -days 3650 -sha256 -out "$1.crt" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
}
# sign NAME SUBJECT ISSUER EXTFILE [x509 options]
sign() {
  name=$1 subject=$2 issuer=$3 ext=$4
  shift 4
  key "$name"
  ossl req -new -key "$name.key" -subj "$subject" -out "$name.csr"
  ossl x509 -req -in "$name.csr" -CA "$issuer.crt" -CAkey "$issuer.key" -CAcreateserial -sha256 \
    -extfile "$ext" -out "$name.crt" "$@"
}

ca ca "/O=mqttbroker tests/CN=mqttbroker test root CA"
sign int "/O=mqttbroker tests/CN=mqttbroker test intermediate CA" ca ca.ext -days 3650
sign server "/O=mqttbroker tests/CN=mqttbroker test server" int server.ext -days 3650
cat server.crt int.crt > server-chain.crt
sign server2 "/O=mqttbroker tests/CN=mqttbroker test server 2" int server.ext -days 3650
cat server2.crt int.crt > server2-chain.crt
sign alice "/O=mqttbroker tests/CN=alice" ca client.ext -days 3650
sign bob "/O=mqttbroker tests/CN=bob" ca client.ext -days 3650
sign san-only "/O=mqttbroker tests" ca san.ext -days 3650
ca rogue-ca "/O=somebody else/CN=rogue CA"
sign rogue "/O=somebody else/CN=alice" rogue-ca client.ext -days 3650

# Expired: `openssl ca` takes explicit start and end dates (x509 -req cannot before OpenSSL 3.4).
mkdir -p ca-db
: > ca-db/index.txt
echo 1000 > ca-db/serial
cat > ca.cnf <<CNF
[ca]
default_ca = test_ca
[test_ca]
database = ca-db/index.txt
new_certs_dir = ca-db
serial = ca-db/serial
default_md = sha256
policy = policy_any
unique_subject = no
[policy_any]
commonName = supplied
organizationName = optional
[client_ext]
basicConstraints = CA:FALSE
extendedKeyUsage = clientAuth
CNF
key expired
ossl req -new -key expired.key -subj "/O=mqttbroker tests/CN=expired" -out expired.csr
ossl ca -batch -config ca.cnf -cert ca.crt -keyfile ca.key -in expired.csr -out expired.crt -notext \
  -startdate 20200101000000Z -enddate 20200102000000Z -extensions client_ext
# Revoked: signed through the same database, revoked there, and listed in the root's CRL.
echo 1000 > ca-db/crlnumber
sed -i 's|^default_md = sha256$|default_md = sha256\ncrlnumber = ca-db/crlnumber\ndefault_crl_days = 3650|' ca.cnf
key revoked
ossl req -new -key revoked.key -subj "/O=mqttbroker tests/CN=revoked" -out revoked.csr
ossl ca -batch -config ca.cnf -cert ca.crt -keyfile ca.key -in revoked.csr -out revoked.crt -notext \
  -days 3650 -extensions client_ext
ossl ca -batch -config ca.cnf -cert ca.crt -keyfile ca.key -gencrl -out crl-empty.pem
ossl ca -batch -config ca.cnf -cert ca.crt -keyfile ca.key -revoke revoked.crt
ossl ca -batch -config ca.cnf -cert ca.crt -keyfile ca.key -gencrl -out crl.pem
test -s crl.pem || { echo "make-certs.sh: $dir/crl.pem was not made" >&2; exit 1; }
for f in ca int server server2 alice bob san-only rogue-ca rogue expired revoked; do
  test -s "$f.crt" || { echo "make-certs.sh: $dir/$f.crt was not made" >&2; exit 1; }
done
