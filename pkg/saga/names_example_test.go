package saga_test

import (
	"fmt"

	"github.com/vextrus/dtx/pkg/saga"
)

// Two deployments on one cluster keep their built-in topics and consumer
// groups apart with a prefix each.
func ExampleNames() {
	fmt.Printf("%+v\n", saga.Names(""))
	fmt.Printf("%+v\n", saga.Names("billing-"))
	// Output:
	// {Prefix: Replies:dtx.saga.replies Events:dtx.saga.events OrchestratorGroup:dtx-orchestrator}
	// {Prefix:billing- Replies:billing-dtx.saga.replies Events:billing-dtx.saga.events OrchestratorGroup:billing-dtx-orchestrator}
}
