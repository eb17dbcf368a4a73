package main

import (
	"github.com/agentmeter/agentmeter/config"
	"github.com/agentmeter/agentmeter/pricing"
)

// priceSource is the price table the pricing section names.
func priceSource(p config.Pricing) pricing.Source {
	return pricing.Source{Table: p.Table, Format: p.Format, Overrides: p.Overrides}
}
