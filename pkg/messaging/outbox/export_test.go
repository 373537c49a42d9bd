package outbox

import dto "github.com/prometheus/client_model/go"

// JSONBTextLen exposes jsonbTextLen to the tests.
var JSONBTextLen = jsonbTextLen

// RiskCount returns dtx_outbox_order_risk_total{result}.
func RiskCount(o *Outbox, result string) float64 {
	var m dto.Metric
	if err := o.risk.WithLabelValues(result).Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}
