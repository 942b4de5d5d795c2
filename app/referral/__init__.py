"""Referrals between organisations: the Task lifecycle, MedCom-style messages, ZorgDomein-style documents (pure)."""
