"""Avalanche adapters over the ponderlife core (plugins, the PonderNet strategy, metrics,
streams). Filled by the Avalanche-integration issue; see strategies/README.md."""
