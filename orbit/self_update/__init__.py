"""orbit's own update (docs/adr/0005): the update machinery built from the options, the trial boot and quarantine.

- ``setup``: trusted root, ``tuf_updates`` client, installer and tracked targets from the options
- ``self_updater``: stage → trial exec → confirm (promote) or revert; ``AgentExit`` tells ``__main__`` what to do
- ``trial_boot``: the bookkeeping (marker, quarantine, how this start is classified), pure where it decides
"""
