package kafka

import (
	"fmt"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/twmb/franz-go/pkg/kgo"
)

// kgoLogger passes the Kafka client's logs to a Watermill logger, one level
// down: franz-go logs group joins and metadata changes at info, which are
// debug detail for a service.
type kgoLogger struct {
	l     watermill.LoggerAdapter
	level kgo.LogLevel
}

func newKgoLogger(l watermill.LoggerAdapter) kgoLogger {
	level := kgo.LogLevelInfo
	if _, nop := l.(watermill.NopLogger); nop {
		// Spares the client from building log lines nobody reads.
		level = kgo.LogLevelNone
	}
	return kgoLogger{l: l, level: level}
}

func (k kgoLogger) Level() kgo.LogLevel { return k.level }

func (k kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	fields := make(watermill.LogFields, len(keyvals)/2+1)
	var err error
	for i := 0; i+1 < len(keyvals); i += 2 {
		key := fmt.Sprint(keyvals[i])
		if e, ok := keyvals[i+1].(error); ok && key == "err" && err == nil {
			err = e
			continue
		}
		fields[key] = keyvals[i+1]
	}
	msg = "kafka client: " + msg
	switch level {
	case kgo.LogLevelError:
		k.l.Error(msg, err, fields)
		return
	case kgo.LogLevelWarn:
		if err != nil {
			fields["err"] = err
		}
		k.l.Info(msg, fields)
		return
	}
	if err != nil {
		fields["err"] = err
	}
	if level == kgo.LogLevelInfo {
		k.l.Debug(msg, fields)
		return
	}
	k.l.Trace(msg, fields)
}
