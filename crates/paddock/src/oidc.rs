//! The engine's `TokenVerifier`: OIDC JWTs of the issuers the settings
//! file trusts (`paddock_oidc`), their claims as a principal.

use paddock_core::auth::TokenVerifier;
use paddock_core::model::Principal;
use paddock_core::Error;

pub struct Tokens(pub paddock_oidc::Verifier);

#[async_trait::async_trait]
impl TokenVerifier for Tokens {
    fn accepts(&self, token: &str) -> bool {
        paddock_oidc::Verifier::looks_like_jwt(token)
    }

    async fn verify(&self, token: &str) -> paddock_core::Result<Principal> {
        match self.0.verify(token).await {
            Ok(id) => Ok(Principal {
                id: id.principal,
                email: id.email,
                name: id.name,
                groups: id.groups,
                ..Default::default()
            }),
            Err(paddock_oidc::OidcError::Unavailable(e)) => Err(Error::Unavailable {
                what: "the token issuer's keys".into(),
                reason: e,
            }),
            Err(e) => Err(Error::Unauthenticated(e.to_string())),
        }
    }
}
