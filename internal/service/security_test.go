package service

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// writeFile writes content to a new file of the test and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

// Every invalid security setting stops the process before it connects,
// with an error naming the setting and never a secret.
func TestSecurityValidationNamesTheSetting(t *testing.T) {
	t.Parallel()
	pw := writeFile(t, "pw", "s3cr3t-pw\n")
	empty := writeFile(t, "empty", "\n")
	notPEM := writeFile(t, "ca.pem", "not a certificate")
	missing := filepath.Join(t.TempDir(), "missing")
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want []string
	}{
		{"unknown mechanism", []string{"--kafka-sasl-mechanism", "GSSAPI", "--kafka-sasl-username", "u", "--kafka-sasl-password-file", pw}, nil,
			[]string{"kafka-sasl-mechanism (DTX_KAFKA_SASL_MECHANISM)", `"GSSAPI"`}},
		{"mechanism without user or password", []string{"--kafka-sasl-mechanism", "SCRAM-SHA-256"}, nil,
			[]string{"kafka-sasl-username (DTX_KAFKA_SASL_USERNAME)", "kafka-sasl-password-file (DTX_KAFKA_SASL_PASSWORD_FILE)"}},
		{"user without mechanism", nil, map[string]string{"DTX_KAFKA_SASL_USERNAME": "u"},
			[]string{"kafka-sasl-mechanism (DTX_KAFKA_SASL_MECHANISM)"}},
		{"unreadable password file", []string{"--kafka-sasl-mechanism", "plain", "--kafka-sasl-username", "u", "--kafka-sasl-password-file", missing}, nil,
			[]string{"kafka-sasl-password-file (DTX_KAFKA_SASL_PASSWORD_FILE)", missing, "no such file"}},
		{"empty password file", nil, map[string]string{"DTX_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "DTX_KAFKA_SASL_USERNAME": "u", "DTX_KAFKA_SASL_PASSWORD_FILE": empty},
			[]string{"kafka-sasl-password-file (DTX_KAFKA_SASL_PASSWORD_FILE)", "is empty"}},
		{"cert without key", []string{"--kafka-tls-cert-file", pw}, nil,
			[]string{"kafka-tls-cert-file (DTX_KAFKA_TLS_CERT_FILE)", "without kafka-tls-key-file"}},
		{"key without cert", []string{"--kafka-tls-key-file", pw}, nil,
			[]string{"kafka-tls-key-file (DTX_KAFKA_TLS_KEY_FILE)", "without kafka-tls-cert-file"}},
		{"unreadable cert", []string{"--kafka-tls-cert-file", missing, "--kafka-tls-key-file", pw}, nil,
			[]string{"kafka-tls-cert-file (DTX_KAFKA_TLS_CERT_FILE)", missing}},
		{"cert and key not PEM", []string{"--kafka-tls-cert-file", notPEM, "--kafka-tls-key-file", pw}, nil,
			[]string{"kafka-tls-cert-file (DTX_KAFKA_TLS_CERT_FILE)"}},
		{"unreadable CA", []string{"--kafka-tls", "--kafka-tls-ca-file", missing}, nil,
			[]string{"kafka-tls-ca-file (DTX_KAFKA_TLS_CA_FILE)", missing}},
		{"CA without certificate", []string{"--kafka-tls-ca-file", notPEM}, nil,
			[]string{"kafka-tls-ca-file (DTX_KAFKA_TLS_CA_FILE)", "no PEM certificate"}},
		{"URL file and URL", []string{"--database-url-file", pw}, map[string]string{"DTX_DATABASE_URL": "postgres://u:s3cr3t-pw@h/d"},
			[]string{"database-url-file (DTX_DATABASE_URL_FILE)", "set only one"}},
		{"unreadable URL file", nil, map[string]string{"DTX_DATABASE_URL_FILE": missing},
			[]string{"database-url-file (DTX_DATABASE_URL_FILE)", missing}},
		{"unreadable database password file", []string{"--database-password-file", missing}, nil,
			[]string{"database-password-file (DTX_DATABASE_PASSWORD_FILE)", missing}},
		{"unreadable sslrootcert", []string{"--database-url", "postgres://u:s3cr3t-pw@h/d?sslmode=verify-full&sslrootcert=" + missing}, nil,
			[]string{"database-url (DTX_DATABASE_URL)", "postgres://u:xxxxx@h/d", "CA file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := parse(t, tc.args, tc.env)
			require.Error(t, err)
			for _, w := range tc.want {
				require.ErrorContains(t, err, w)
			}
			require.NotContains(t, err.Error(), "s3cr3t-pw")
		})
	}
}

// A process with invalid security settings exits 2 and says why.
func TestRunRejectsInvalidSecurityWithExit2(t *testing.T) {
	t.Parallel()
	var stderr bytes.Buffer
	app := App{Name: "sec-test", DefaultAdminAddr: ":0", RunFunc: Idle("nothing")}
	code := Run(context.Background(), app, []string{"--kafka-sasl-mechanism", "SCRAM-SHA-1"}, envOf(nil), &bytes.Buffer{}, &stderr)
	require.Equal(t, ExitUsage, code)
	require.Contains(t, stderr.String(), "kafka-sasl-mechanism (DTX_KAFKA_SASL_MECHANISM)")
	require.Contains(t, stderr.String(), "kafka-sasl-username (DTX_KAFKA_SASL_USERNAME)")
}

func TestSecretFilesAreTrimmedOfOneNewline(t *testing.T) {
	t.Parallel()
	url := "postgres://u:s3cr3t-pw@db.example:5432/d?sslmode=require"
	cfg, err := parse(t, nil, map[string]string{"DTX_DATABASE_URL_FILE": writeFile(t, "url", url+"\r\n")})
	require.NoError(t, err)
	require.Equal(t, url, cfg.DatabaseURL)

	for content, want := range map[string]string{"pw\n": "pw", "pw": "pw", "pw\r\n": "pw", "pw \n": "pw ", "pw\n\n": "pw\n"} {
		got, err := readSecretFile("kafka-sasl-password-file", writeFile(t, "pw", content))
		require.NoError(t, err)
		require.Equal(t, want, got, "%q", content)
	}
}

// The database password file's content is what each new connection uses,
// read again each time so that a rotated secret applies.
func TestDatabasePasswordFileIsReadPerConnection(t *testing.T) {
	t.Parallel()
	file := writeFile(t, "pgpw", "first\n")
	cfg, err := parse(t, []string{"--database-password-file", file, "--database-url", "postgres://u:from-url@h/d"}, nil)
	require.NoError(t, err)
	poolCfg := mustPoolConfig(t, cfg.DatabaseURL)
	cfg.applyDatabaseSecrets(poolCfg)
	cc := poolCfg.ConnConfig.Copy()
	require.NoError(t, poolCfg.BeforeConnect(context.Background(), cc))
	require.Equal(t, "first", cc.Password)
	require.NoError(t, os.WriteFile(file, []byte("second"), 0o600))
	require.NoError(t, poolCfg.BeforeConnect(context.Background(), cc))
	require.Equal(t, "second", cc.Password)
	require.NoError(t, os.Remove(file))
	err = poolCfg.BeforeConnect(context.Background(), cc)
	require.ErrorContains(t, err, "database-password-file (DTX_DATABASE_PASSWORD_FILE)")
}

// testPKI is a CA and a certificate it signed, as PEM files.
type testPKI struct {
	caFile, certFile, keyFile string
	caPool                    *x509.CertPool
	cert                      tls.Certificate
}

// newTestPKI makes a self-signed CA and a certificate signed by it for
// 127.0.0.1 and the DNS name "kafka.test", usable by a server or a client.
func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "dtx test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	caCert, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kafka.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"kafka.test"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)

	caPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	certPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	keyPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	p := testPKI{
		caFile: writeFile(t, "ca.pem", caPEM), certFile: writeFile(t, "cert.pem", certPEM), keyFile: writeFile(t, "key.pem", keyPEM),
		caPool: x509.NewCertPool(),
	}
	p.caPool.AddCert(caCert)
	p.cert, err = tls.X509KeyPair([]byte(certPEM), []byte(keyPEM))
	require.NoError(t, err)
	return p
}

// The TLS configuration holds the CA pool, the client certificate and the
// server name of the settings.
func TestKafkaTLSConfigIsBuiltFromTheFiles(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	cfg, err := parse(t, []string{"--kafka-tls-ca-file", pki.caFile, "--kafka-tls-cert-file", pki.certFile,
		"--kafka-tls-key-file", pki.keyFile, "--kafka-tls-server-name", "kafka.test"}, nil)
	require.NoError(t, err)
	require.True(t, cfg.tlsOn(), "a TLS file implies --kafka-tls")
	tc, err := cfg.KafkaTLSConfig()
	require.NoError(t, err)
	require.Equal(t, "kafka.test", tc.ServerName)
	require.False(t, tc.InsecureSkipVerify)
	require.Equal(t, uint16(tls.VersionTLS12), tc.MinVersion)
	require.Len(t, tc.Certificates, 1)
	require.Equal(t, pki.cert.Certificate[0], tc.Certificates[0].Certificate[0])
	leaf, err := x509.ParseCertificate(pki.cert.Certificate[0])
	require.NoError(t, err)
	_, err = leaf.Verify(x509.VerifyOptions{Roots: tc.RootCAs, DNSName: "kafka.test"})
	require.NoError(t, err, "the CA pool is the CA file's")
	require.Len(t, cfg.KafkaOpts(), 1, "TLS only: one dial option")

	plainCfg, err := parse(t, nil, nil)
	require.NoError(t, err)
	require.Empty(t, plainCfg.KafkaOpts(), "nothing configured: no option")
}

// startTLSKfake starts an embedded broker that serves TLS with the test
// PKI's certificate, requiring SASL when user is set.
func startKfake(t *testing.T, tlsCfg *tls.Config, saslMechanism, user, pass string) string {
	t.Helper()
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.SeedTopics(1, "sec")}
	if tlsCfg != nil {
		opts = append(opts, kfake.TLS(tlsCfg))
	}
	if user != "" {
		opts = append(opts, kfake.EnableSASL(), kfake.Superuser(saslMechanism, user, pass))
	}
	c, err := kfake.NewCluster(opts...)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c.ListenAddrs()[0]
}

// produceConsume produces one record to topic with a client of cfg's Kafka
// options and reads it back.
func produceConsume(t *testing.T, cfg Config, brokers []string, topic string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(append(cfg.KafkaOpts(), kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DialTimeout(5*time.Second), kgo.RetryTimeout(5*time.Second),
		// A topic created on first use takes a moment to have a leader.
		kgo.UnknownTopicRetries(-1))...)
	require.NoError(t, err)
	defer cl.Close()
	// A refused handshake or authentication is not retried by a ping: it
	// returns the broker's answer, where a produce would retry until ctx ends.
	pingCtx, pingCancel := context.WithTimeout(ctx, 10*time.Second)
	defer pingCancel()
	if err := cl.Ping(pingCtx); err != nil {
		return err
	}
	value := fmt.Sprintf("secured %d", time.Now().UnixNano())
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte(value)}).FirstErr(); err != nil {
		return err
	}
	for {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			return err
		}
		var found bool
		fs.EachRecord(func(r *kgo.Record) { found = found || string(r.Value) == value })
		if found {
			return nil
		}
	}
}

// A client built from the settings talks TLS to a broker whose certificate
// the CA file signed, and refuses one it did not.
func TestKafkaTLSAgainstATLSListener(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	addr := startKfake(t, &tls.Config{Certificates: []tls.Certificate{pki.cert}, MinVersion: tls.VersionTLS12}, "", "", "")

	cfg, err := parse(t, []string{"--kafka-brokers", addr, "--kafka-tls", "--kafka-tls-ca-file", pki.caFile}, nil)
	require.NoError(t, err)
	require.NoError(t, produceConsume(t, cfg, cfg.KafkaBrokers, "sec"))

	other := newTestPKI(t)
	cfg, err = parse(t, []string{"--kafka-brokers", addr, "--kafka-tls-ca-file", other.caFile}, nil)
	require.NoError(t, err)
	err = produceConsume(t, cfg, cfg.KafkaBrokers, "sec")
	require.Error(t, err)
	require.Contains(t, err.Error(), "certificate signed by unknown authority")

	cfg, err = parse(t, []string{"--kafka-brokers", addr, "--kafka-tls-ca-file", pki.caFile, "--kafka-tls-server-name", "other.test"}, nil)
	require.NoError(t, err)
	err = produceConsume(t, cfg, cfg.KafkaBrokers, "sec")
	require.ErrorContains(t, err, "other.test")
}

// SASL through the settings against the embedded broker: each mechanism
// authenticates with the right password and is refused with a wrong one.
// (The test against Apache Kafka's SCRAM listener is in
// security_kafka_test.go.)
func TestKafkaSASLAgainstEmbeddedBroker(t *testing.T) {
	t.Parallel()
	for _, mech := range []string{SASLPlain, SASLScramSHA256, SASLScramSHA512} {
		t.Run(mech, func(t *testing.T) {
			t.Parallel()
			addr := startKfake(t, nil, mech, "dtx", "right-pw")
			args := []string{"--kafka-brokers", addr, "--kafka-sasl-mechanism", strings.ToLower(mech), "--kafka-sasl-username", "dtx"}
			cfg, err := parse(t, append(args, "--kafka-sasl-password-file", writeFile(t, "pw", "right-pw\n")), nil)
			require.NoError(t, err)
			require.NoError(t, produceConsume(t, cfg, cfg.KafkaBrokers, "sec"))

			cfg, err = parse(t, append(args, "--kafka-sasl-password-file", writeFile(t, "pw", "wrong-pw\n")), nil)
			require.NoError(t, err)
			// The embedded broker drops the connection rather than answer
			// with an error code; Apache Kafka's answer is checked in
			// TestKafkaSCRAMAgainstApacheKafka.
			require.Error(t, produceConsume(t, cfg, cfg.KafkaBrokers, "sec"))
		})
	}
}

// The start-up log says which protections are on and never holds a
// secret; skipping certificate checks is a loud warning.
func TestSecurityLogLines(t *testing.T) {
	t.Parallel()
	pw := writeFile(t, "pw", "s3cr3t-pw\n")
	url := writeFile(t, "url", "postgres://u:s3cr3t-url@127.0.0.1:1/d?sslmode=disable\n")
	cfg, err := parse(t, []string{"--kafka-sasl-mechanism", "scram-sha-512", "--kafka-sasl-username", "dtx",
		"--kafka-sasl-password-file", pw, "--database-url-file", url, "--database-password-file", pw,
		"--kafka-tls-insecure-skip-verify"}, nil)
	require.NoError(t, err)
	var out bytes.Buffer
	log := newLogger(cfg, &out)
	log.Info("connection security", cfg.securityLogAttrs()...)
	cfg.warnInsecure(log)
	log.Info("config", "config", cfg, "dump", fmt.Sprintf("%+v %#v", cfg, cfg))
	require.Contains(t, out.String(), `"kafka_sasl_mechanism":"SCRAM-SHA-512"`)
	require.Contains(t, out.String(), `"kafka_tls":true`)
	require.Contains(t, out.String(), `"level":"WARN","msg":"INSECURE: kafka-tls-insecure-skip-verify is on`)
	require.NotContains(t, out.String(), "s3cr3t-pw")
	require.Contains(t, RedactURL(cfg.DatabaseURL), "xxxxx")
}

func mustPoolConfig(t *testing.T, url string) *pgxpool.Config {
	t.Helper()
	c, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	return c
}
